from django.conf import settings
from django.db import migrations, models
from django.db.models import F

# The orders placed before this migration were e-mailed their link at checkout: the beat that now
# sends it a minute later must not send those buyers a second one.
UNMAILED_STATUSES = ["awaiting_payment", "paid", "held_for_review", "cancelled", "expired"]


def orders_placed_before_mark_mailed(apps, schema_editor):
    Order = apps.get_model("escrow", "Order")
    Order.objects.filter(status__in=UNMAILED_STATUSES, link_emailed_at__isnull=True).update(
        link_emailed_at=F("created_at")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("escrow", "0012_order_discount_coupon_language"),
        ("shop", "0014_merchant_kyc_product_review"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="link_emailed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(orders_placed_before_mark_mailed, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="order",
            index=models.Index(
                condition=models.Q(
                    ("link_emailed_at__isnull", True),
                    ("status__in", ["awaiting_payment", "paid", "held_for_review", "cancelled", "expired"]),
                ),
                fields=["created_at"],
                name="escrow_order_link_unmailed",
            ),
        ),
    ]
