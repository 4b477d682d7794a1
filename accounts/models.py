import hmac

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.plugins.otp_totp.models import TOTPDevice as _OtpTOTPDevice

from accounts import sealing


class User(AbstractUser):
    """A person who signs in: a buyer, a merchant's owner or a staff member (guests have no row)."""

    email = models.EmailField(_("e-mail address"), blank=True)

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")


class AuditAction(models.TextChoices):
    """Every action the audit trail records; `audit_record` refuses any other. The stored strings are
    machine codes read by tests, reports and old rows: never rename one, add a new one."""

    TWO_FACTOR_ENROL_STARTED = "2fa.enrol_started", "2fa.enrol_started"
    TWO_FACTOR_ENROLLED = "2fa.enrolled", "2fa.enrolled"
    TWO_FACTOR_BACKUP_CODES_REGENERATED = "2fa.backup_codes_regenerated", "2fa.backup_codes_regenerated"
    TWO_FACTOR_FAILED = "2fa.failed", "2fa.failed"
    TWO_FACTOR_VERIFIED = "2fa.verified", "2fa.verified"
    TWO_FACTOR_PROVISIONED = "2fa.provisioned", "2fa.provisioned"
    TWO_FACTOR_SEED_RESEALED = "2fa.seed_resealed", "2fa.seed_resealed"
    ALERT_RAISED = "alert.raised", "alert.raised"
    API_TOKEN_CREATED = "api_token.created", "api_token.created"
    API_TOKEN_REVOKED = "api_token.revoked", "api_token.revoked"
    COUPON_CREATED = "coupon.created", "coupon.created"
    COUPON_DEACTIVATED = "coupon.deactivated", "coupon.deactivated"
    DISPUTE_OPENED = "dispute.opened", "dispute.opened"
    DISPUTE_REPLACED = "dispute.replaced", "dispute.replaced"
    DISPUTE_REOPENED = "dispute.reopened", "dispute.reopened"
    DISPUTE_CONTESTED = "dispute.contested", "dispute.contested"
    DISPUTE_ESCALATED = "dispute.escalated", "dispute.escalated"
    DISPUTE_QUESTION_ASKED = "dispute.question_asked", "dispute.question_asked"
    DISPUTE_RESOLVED = "dispute.resolved", "dispute.resolved"
    LIABILITIES_PUBLISHED = "liabilities.published", "liabilities.published"
    MERCHANT_CREATED = "merchant.created", "merchant.created"
    MERCHANT_APPROVED = "merchant.approved", "merchant.approved"
    MERCHANT_REJECTED = "merchant.rejected", "merchant.rejected"
    MERCHANT_UPDATED = "merchant.updated", "merchant.updated"
    MERCHANT_DATA_KEY_REWRAPPED = "merchant.data_key_rewrapped", "merchant.data_key_rewrapped"
    ORDER_PLACED = "order.placed", "order.placed"
    ORDER_DELIVERED = "order.delivered", "order.delivered"
    ORDER_COMPLETED = "order.completed", "order.completed"
    ORDER_EXPIRED = "order.expired", "order.expired"
    ORDER_REFUNDED = "order.refunded", "order.refunded"
    ORDER_REVIEW_APPROVED = "order.review_approved", "order.review_approved"
    ORDER_REVIEW_REJECTED = "order.review_rejected", "order.review_rejected"
    ORDER_DISPUTED = "order.disputed", "order.disputed"
    ORDER_KEY_REPLACED = "order.key_replaced", "order.key_replaced"
    ORDER_DISPUTE_DECIDED = "order.dispute_decided", "order.dispute_decided"
    PAYMENT_SUCCEEDED = "payment.succeeded", "payment.succeeded"
    PAYMENT_FAILED = "payment.failed", "payment.failed"
    PAYMENT_MISMATCHED = "payment.mismatched", "payment.mismatched"
    PAYMENT_RETRIED = "payment.retried", "payment.retried"
    PAYOUT_ACCOUNT_ADDED = "payout_account.added", "payout_account.added"
    PRODUCT_UPDATED = "product.updated", "product.updated"
    PRODUCT_PAUSED = "product.paused", "product.paused"
    PRODUCT_RESUMED = "product.resumed", "product.resumed"
    PRODUCT_LOW_STOCK = "product.low_stock", "product.low_stock"
    REFUND_BOOKED = "refund.booked", "refund.booked"
    REFUND_SUBMITTED = "refund.submitted", "refund.submitted"
    REFUND_SUCCEEDED = "refund.succeeded", "refund.succeeded"
    RESERVE_RELEASED = "reserve.released", "reserve.released"
    STOCK_UPLOAD_STARTED = "stock.upload_started", "stock.upload_started"
    STOCK_UPLOAD_DONE = "stock.upload_done", "stock.upload_done"
    STOCK_UPLOAD_FAILED = "stock.upload_failed", "stock.upload_failed"
    STOCK_REVOKED = "stock.revoked", "stock.revoked"
    STOCK_EXPORTED = "stock.exported", "stock.exported"
    WITHDRAWAL_REQUESTED = "withdrawal.requested", "withdrawal.requested"
    WITHDRAWAL_PAID = "withdrawal.paid", "withdrawal.paid"
    WITHDRAWAL_REJECTED = "withdrawal.rejected", "withdrawal.rejected"


class AuditEntry(models.Model):
    """One line of the append-only audit trail: every money movement and every decision."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True, choices=AuditAction.choices)
    subject_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["subject_type", "subject_id"])]
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit entries")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.subject_type}:{self.subject_id}"


class StaffApiToken(models.Model):
    """A staff member's API token (arbitration scripts). Only its SHA-256 digest is stored; the token is
    shown once, at creation, which needs a fresh second factor (`accounts.services.staff_api_token_create`)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="staff_api_tokens")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("staff API token")
        verbose_name_plural = _("staff API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


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


# --- two-factor devices (django-otp plugins whose secrets a database dump does not give away) ------


class AuthenticatorDevice(TimestampMixin, ThrottlingMixin, Device):
    """An authenticator app: django-otp's TOTP device, with its seed sealed (accounts/sealing.py).

    The seed is sealed under the newest master key with associated data naming this row, so it is
    written once the row has its pk (`accounts.services` creates devices); `bin_key` opens it.
    """

    key_sealed = models.BinaryField(editable=False)
    step = models.PositiveSmallIntegerField(default=30)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(choices=[(6, 6), (8, 8)], default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(default=-1)

    class Meta(Device.Meta):
        verbose_name = _("authenticator app")
        verbose_name_plural = _("authenticator apps")

    # django-otp's own TOTP logic (verification, drift, replay refusal, throttling, otpauth:// URI),
    # reused as it is: only where the seed is kept differs.
    verify_token = _OtpTOTPDevice.verify_token
    get_throttle_factor = _OtpTOTPDevice.get_throttle_factor
    config_url = _OtpTOTPDevice.config_url
    _read_str_from_settings = _OtpTOTPDevice._read_str_from_settings

    @property
    def bin_key(self) -> bytes:
        return sealing.totp_seed_unseal(bytes(self.key_sealed), device_pk=self.pk)


class BackupCodeDevice(TimestampMixin, ThrottlingMixin, Device):
    """A user's single-use backup codes: django-otp's static device, with each code kept only as a
    keyed hash (`BackupCode.digest`); the codes themselves are shown once, when issued."""

    class Meta(Device.Meta):
        verbose_name = _("backup codes")
        verbose_name_plural = _("backup codes")

    def get_throttle_factor(self) -> int:
        return getattr(settings, "OTP_STATIC_THROTTLE_FACTOR", 1)

    def verify_token(self, token) -> bool:
        """True once per code: a matching code is deleted (and only the request that deleted it
        passes); a wrong one counts against the throttle."""
        if not self.verify_is_allowed()[0]:
            return False
        digest = sealing.backup_code_digest(str(token))
        match = next((c for c in self.codes.all() if hmac.compare_digest(c.digest, digest)), None)
        if match is not None and BackupCode.objects.filter(pk=match.pk).delete()[0] == 1:
            self.throttle_reset(commit=False)
            self.set_last_used_timestamp(commit=False)
            self.save()
            return True
        self.throttle_increment()
        return False


class BackupCode(models.Model):
    device = models.ForeignKey(BackupCodeDevice, on_delete=models.CASCADE, related_name="codes")
    digest = models.CharField(max_length=64, db_index=True)

    class Meta:
        verbose_name = _("backup code")
        verbose_name_plural = _("backup codes")

    def __str__(self) -> str:
        return f"backup code {self.pk}"
