from django.db import migrations, models


def mark_keys_of_past_exports(apps, schema_editor):
    """Past exports were audited per product with a count only, not per key. To stay safe, every key of
    an exported product that existed at its latest export counts as exported (a refund revokes it
    rather than sell a key the merchant may have handed out)."""
    AuditEntry = apps.get_model("accounts", "AuditEntry")
    CardKey = apps.get_model("shop", "CardKey")
    latest: dict[str, object] = {}
    for subject_id, at in AuditEntry.objects.filter(action="stock.exported", subject_type="shop.product").values_list(
        "subject_id", "at"
    ):
        if subject_id not in latest or at > latest[subject_id]:
            latest[subject_id] = at
    for product_pk, at in latest.items():
        CardKey.objects.filter(product_id=int(product_pk), created_at__lte=at, exported_at__isnull=True).update(
            exported_at=at
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_alert"),
        ("shop", "0005_card_key_replaced_status"),
    ]

    operations = [
        migrations.AddField(
            model_name="cardkey",
            name="exported_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(mark_keys_of_past_exports, migrations.RunPython.noop),
    ]
