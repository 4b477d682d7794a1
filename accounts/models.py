from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """A person who signs in: a buyer, a merchant's owner or a staff member (guests have no row)."""

    email = models.EmailField(_("e-mail address"), blank=True)

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")


class AuditEntry(models.Model):
    """One line of the append-only audit trail: every money movement and every decision."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)
    subject_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["subject_type", "subject_id"])]
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit entries")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.subject_type}:{self.subject_id}"


class Alert(models.Model):
    """Something staff must look at (a reconciliation difference, …). Raised once per `key`."""

    key = models.CharField(max_length=160, unique=True)
    kind = models.CharField(max_length=64, db_index=True)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"
