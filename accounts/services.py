from datetime import datetime
from typing import Any

from django.db import models

from accounts.models import AuditEntry, User


def audit_record(
    *,
    action: str,
    subject: models.Model,
    now: datetime,
    actor: User | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit line. Call it inside the transaction of the change it records."""
    return AuditEntry.objects.create(
        at=now,
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        subject_type=subject._meta.label_lower,
        subject_id=str(subject.pk),
        data=data or {},
    )
