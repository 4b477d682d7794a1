"""Risk's audit lines go to the shop's one audit trail without risk importing `accounts`.

`settings.RISK_AUDIT_RECORD` names the function (`accounts.services.audit_record`): config wires the
dependency, as DRF's settings name authentication classes. Risk passes its own rows as subjects
(`risk.rule`, `risk.blockentry`, `risk.reviewitem`), so the trail's hash chain covers rule edits and
review decisions like any other decision. Unset (a test of risk alone), nothing is written.
"""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string


def risk_audit(*, action: str, subject, now: datetime, actor=None, data: dict[str, Any] | None = None) -> None:
    """Append one audit line through the configured function, inside the caller's transaction."""
    path = getattr(settings, "RISK_AUDIT_RECORD", "")
    if path:
        import_string(path)(action=action, subject=subject, now=now, actor=actor, data=data or {})
