from django.db import migrations, models


def render_existing_descriptions(apps, schema_editor):
    """Render every existing description once, as the services now do on save (pages no longer render).

    It uses today's renderer on purpose: the stored HTML must be what the shop serves from now on.
    """
    from shop.markdown import render_markdown

    Product = apps.get_model("shop", "Product")
    batch = []
    for product in Product.objects.only("pk", "description").order_by("pk").iterator(chunk_size=500):
        product.description_html = render_markdown(product.description)
        batch.append(product)
        if len(batch) == 500:
            Product.objects.bulk_update(batch, ["description_html"])
            batch = []
    Product.objects.bulk_update(batch, ["description_html"])


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0006_card_key_exported_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="product",
            name="description_html",
            field=models.TextField(blank=True, editable=False),
        ),
        migrations.AlterField(
            model_name="product",
            name="description",
            field=models.TextField(blank=True, max_length=20000, verbose_name="description"),
        ),
        migrations.RunPython(render_existing_descriptions, migrations.RunPython.noop, elidable=True),
    ]
