from django.db import models
from django.utils.translation import gettext_lazy as _


class IdempotencyKey(models.Model):
    """One `Idempotency-Key` a caller sent, claimed before the work (the unique constraint on caller and
    key is what lets only one of two identical requests run), then holding the first answer for 24 hours.

    `caller` is a plain label (`user:<pk>`), not a foreign key, so `core` knows none of our apps."""

    caller = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    # SHA-256 of the method, path, query and body: the same key with another request is refused.
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(db_index=True)
    # Empty while the first request runs; then its answer, replayed as it was.
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("idempotency key")
        verbose_name_plural = _("idempotency keys")
        constraints = [models.UniqueConstraint(fields=["caller", "key"], name="idempotency_key_once_per_caller")]

    def __str__(self) -> str:
        return f"{self.caller} {self.key}"
