"""The in-site inbox moves to accounts (accounts.Notification), so that every app can post to it
(a new paid order from escrow, a dispute step from here): the lines written so far are copied over,
then the old table goes."""

from django.db import migrations


def lines_copy(apps, schema_editor):
    Old = apps.get_model("disputes", "Notification")
    New = apps.get_model("accounts", "Notification")
    New.objects.bulk_create(
        New(
            user_id=line.user_id,
            event="dispute",
            subject=f"dispute:{line.dispute_id}",
            text=line.text,
            url=line.url,
            created_at=line.created_at,
            read_at=line.read_at,
        )
        for line in Old.objects.order_by("pk").iterator()
    )


def lines_copy_back(apps, schema_editor):
    Old = apps.get_model("disputes", "Notification")
    New = apps.get_model("accounts", "Notification")
    for line in New.objects.filter(subject__startswith="dispute:").order_by("pk").iterator():
        Old.objects.create(
            user_id=line.user_id,
            dispute_id=int(line.subject.split(":")[1]),
            text=line.text,
            url=line.url,
            created_at=line.created_at,
            read_at=line.read_at,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0007_user_language_and_inbox"),
        ("disputes", "0004_attachments_and_notifications"),
    ]

    operations = [
        migrations.RunPython(lines_copy, lines_copy_back),
        migrations.DeleteModel(name="Notification"),
    ]
