"""Disputes answered before `merchant_answered_at` existed get it from the audit trail: the time of the
merchant's first replace, contest or refund, so the median answer time counts them too."""

from django.db import migrations, models
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Cast


def backfill(apps, schema_editor):
    Dispute = apps.get_model("disputes", "Dispute")
    AuditEntry = apps.get_model("accounts", "AuditEntry")
    first_answer = (
        AuditEntry.objects.filter(subject_type="disputes.dispute", subject_id=Cast(OuterRef("pk"), models.CharField()))
        .filter(Q(action__in=["dispute.replaced", "dispute.contested"]) | Q(action="dispute.resolved", data__by="merchant"))
        .order_by("at")
        .values("at")[:1]
    )
    Dispute.objects.filter(merchant_answered_at__isnull=True).update(merchant_answered_at=Subquery(first_answer))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_staff_api_token_and_dispute_audit_actions"),
        ("disputes", "0002_rating_and_merchant_answered_at"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
