"""Reads that need more than one line."""

from accounts.models import AuditCheckpoint

TRANSPARENCY_CHECKPOINTS = 24


def audit_checkpoints_published(*, limit: int = TRANSPARENCY_CHECKPOINTS) -> list[AuditCheckpoint]:
    """The newest published heads of the audit chain, newest first (the public transparency page)."""
    return list(AuditCheckpoint.objects.order_by("-seq")[:limit])
