# The partial index of available keys ordered by `id + 0`, an order no other index gives, so that a claim
# cannot walk the primary key instead (shop/models.py, CardKey.Meta.indexes).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("escrow", "0014_order_unpaid_caps_indexes"),
        ("shop", "0015_merchant_has_webhook_endpoints"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="cardkey",
            name="card_key_available_idx",
        ),
        migrations.AddIndex(
            model_name="cardkey",
            index=models.Index(
                models.F("product"),
                models.F("id") + 0,
                condition=models.Q(("status", "available")),
                name="card_key_available_idx",
            ),
        ),
    ]
