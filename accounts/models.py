import hmac

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.plugins.otp_totp.models import TOTPDevice as _OtpTOTPDevice

from accounts import sealing


class User(AbstractUser):
    """A person who signs in: a buyer, a merchant's owner or a staff member (guests have no row)."""

    email = models.EmailField(_("e-mail address"), blank=True)
    # The language they last chose in the header (a code of settings.LANGUAGES), applied at each sign-in
    # by accounts.middleware.UserLanguageMiddleware; empty until they choose.
    language = models.CharField(_("language"), max_length=16, blank=True)
    # None until the owner follows the signed link e-mailed at sign-up (accounts made by staff, the
    # demo data or before sign-up existed count as verified: migration 0010 set them).
    email_verified_at = models.DateTimeField(_("e-mail verified at"), null=True, blank=True)

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [
            # One account per mailbox, whatever the case: sign-in by e-mail and the guest orders
            # attached at verification must name exactly one person.
            models.UniqueConstraint(Lower("email"), condition=~models.Q(email=""), name="accounts_user_email_unique")
        ]

    @property
    def is_email_verified(self) -> bool:
        return self.email_verified_at is not None


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
    ALERT_ACKNOWLEDGED = "alert.acknowledged", "alert.acknowledged"
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
    MERCHANT_KYC_SUBMITTED = "merchant.kyc_submitted", "merchant.kyc_submitted"
    MERCHANT_KYC_DOCUMENT_VIEWED = "merchant.kyc_document_viewed", "merchant.kyc_document_viewed"
    MERCHANT_KYC_DOCUMENT_DELETED = "merchant.kyc_document_deleted", "merchant.kyc_document_deleted"
    ORDER_PLACED = "order.placed", "order.placed"
    ORDER_DELIVERED = "order.delivered", "order.delivered"
    ORDER_COMPLETED = "order.completed", "order.completed"
    ORDER_EXPIRED = "order.expired", "order.expired"
    ORDER_REFUNDED = "order.refunded", "order.refunded"
    ORDER_HELD = "order.held_for_review", "order.held_for_review"
    ORDER_REVIEW_APPROVED = "order.review_approved", "order.review_approved"
    ORDER_REVIEW_REJECTED = "order.review_rejected", "order.review_rejected"
    ORDER_DISPUTED = "order.disputed", "order.disputed"
    ORDER_KEY_REPLACED = "order.key_replaced", "order.key_replaced"
    ORDER_DISPUTE_DECIDED = "order.dispute_decided", "order.dispute_decided"
    ORDER_CLAWED_BACK = "order.clawed_back", "order.clawed_back"
    PAYMENT_SUCCEEDED = "payment.succeeded", "payment.succeeded"
    PAYMENT_FAILED = "payment.failed", "payment.failed"
    PAYMENT_MISMATCHED = "payment.mismatched", "payment.mismatched"
    PAYMENT_RETRIED = "payment.retried", "payment.retried"
    PAYOUT_ACCOUNT_ADDED = "payout_account.added", "payout_account.added"
    PRODUCT_UPDATED = "product.updated", "product.updated"
    PRODUCT_PAUSED = "product.paused", "product.paused"
    PRODUCT_RESUMED = "product.resumed", "product.resumed"
    PRODUCT_LOW_STOCK = "product.low_stock", "product.low_stock"
    PRODUCT_REVIEW_REQUESTED = "product.review_requested", "product.review_requested"
    PRODUCT_APPROVED = "product.approved", "product.approved"
    PRODUCT_REJECTED = "product.rejected", "product.rejected"
    REFUND_BOOKED = "refund.booked", "refund.booked"
    REFUND_SUBMITTED = "refund.submitted", "refund.submitted"
    REFUND_SUCCEEDED = "refund.succeeded", "refund.succeeded"
    REFUND_PAID_BY_HAND = "refund.paid_by_hand", "refund.paid_by_hand"
    REFUND_DECLINED = "refund.declined", "refund.declined"
    RESERVE_RELEASED = "reserve.released", "reserve.released"
    SPENDING_LIMIT_CHANGED = "spending_limit.changed", "spending_limit.changed"
    STOCK_UPLOAD_STARTED = "stock.upload_started", "stock.upload_started"
    STOCK_UPLOAD_DONE = "stock.upload_done", "stock.upload_done"
    STOCK_UPLOAD_FAILED = "stock.upload_failed", "stock.upload_failed"
    STOCK_REVOKED = "stock.revoked", "stock.revoked"
    STOCK_EXPORTED = "stock.exported", "stock.exported"
    WITHDRAWAL_REQUESTED = "withdrawal.requested", "withdrawal.requested"
    WITHDRAWAL_PAID = "withdrawal.paid", "withdrawal.paid"
    WITHDRAWAL_REJECTED = "withdrawal.rejected", "withdrawal.rejected"
    ACCOUNT_SIGNED_UP = "account.signed_up", "account.signed_up"
    ACCOUNT_EMAIL_VERIFIED = "account.email_verified", "account.email_verified"
    ACCOUNT_GUEST_ORDERS_ATTACHED = "account.guest_orders_attached", "account.guest_orders_attached"
    ACCOUNT_SIGNED_IN = "account.signed_in", "account.signed_in"
    ACCOUNT_SIGN_IN_FAILED = "account.sign_in_failed", "account.sign_in_failed"
    ACCOUNT_NEW_DEVICE = "account.new_device", "account.new_device"
    ACCOUNT_SESSION_ENDED = "account.session_ended", "account.session_ended"
    ACCOUNT_SESSIONS_ENDED = "account.sessions_ended", "account.sessions_ended"
    ACCOUNT_PASSWORD_CHANGED = "account.password_changed", "account.password_changed"
    ACCOUNT_PASSWORD_RESET_REQUESTED = "account.password_reset_requested", "account.password_reset_requested"
    ACCOUNT_COMPROMISE_REPORTED = "account.compromise_reported", "account.compromise_reported"
    ACCOUNT_LOCKED_OUT = "account.locked_out", "account.locked_out"
    ACCOUNT_UNLOCKED = "account.unlocked", "account.unlocked"
    ACCOUNT_LANGUAGE_CHANGED = "account.language_changed", "account.language_changed"
    WITHDRAWAL_HELD = "withdrawal.held_for_review", "withdrawal.held_for_review"
    RISK_RULE_CHANGED = "risk.rule_changed", "risk.rule_changed"
    RISK_BLOCK_LIST_CHANGED = "risk.block_list_changed", "risk.block_list_changed"
    RISK_REVIEW_OPENED = "risk.review_opened", "risk.review_opened"
    RISK_REVIEW_APPROVED = "risk.review_approved", "risk.review_approved"
    RISK_REVIEW_REJECTED = "risk.review_rejected", "risk.review_rejected"
    RISK_RESERVE_RAISED = "risk.reserve_raised", "risk.reserve_raised"
    WEBHOOK_ENDPOINT_CREATED = "webhook.endpoint_created", "webhook.endpoint_created"
    WEBHOOK_ENDPOINT_DELETED = "webhook.endpoint_deleted", "webhook.endpoint_deleted"
    WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint_disabled", "webhook.endpoint_disabled"
    WEBHOOK_ENDPOINT_ENABLED = "webhook.endpoint_enabled", "webhook.endpoint_enabled"
    WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated", "webhook.secret_rotated"
    WEBHOOK_SECRET_RESEALED = "webhook.secret_resealed", "webhook.secret_resealed"


class AuditEntry(models.Model):
    """One line of the append-only audit trail: every money movement and every decision."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Not `choices=`: `audit_record` refuses an action outside `AuditAction`, and every new action would
    # otherwise need a migration that only rewrites this list.
    action = models.CharField(max_length=64, db_index=True)
    subject_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    # The hash chain, filled in once by the sealing task (`audit_chain_seal`), never by the writer: `seq`
    # is the entry's place in the chain (1, 2, …; the order in which entries were sealed, which is id
    # order within each run), `hash` the SHA-256 of `prev_hash` and the entry's canonical content
    # (accounts/audit_chain.py). Empty until sealed.
    seq = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["subject_type", "subject_id"]),
            # What the sealer reads every few seconds: the few entries not chained yet.
            models.Index(fields=["id"], condition=models.Q(seq__isnull=True), name="accounts_audit_unsealed"),
        ]
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit entries")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.subject_type}:{self.subject_id}"


class AuditCheckpoint(models.Model):
    """The chain's head at one moment (`seq`, `hash`), published on /transparency/: once someone has
    copied it, rewriting the trail up to that entry (even recomputing every hash) no longer matches."""

    seq = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    entry = models.ForeignKey(AuditEntry, on_delete=models.PROTECT, related_name="+")
    published_at = models.DateTimeField()

    class Meta:
        ordering = ["-seq"]
        verbose_name = _("audit checkpoint")
        verbose_name_plural = _("audit checkpoints")

    def __str__(self) -> str:
        return f"#{self.seq} {self.hash[:16]}…"


class SpendingLimit(models.Model):
    """A buyer's own daily limit in one currency (minor units; `amount` None means no limit).

    A lower limit applies at once; a higher one (or removing the limit) is kept in `pending_amount` and
    applies from `pending_from`, 24 hours later, so whoever takes over a session cannot raise it and
    spend at once. Read it through `effective_amount(now)`."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="spending_limits")
    currency = models.CharField(_("currency"), max_length=3)
    amount = models.PositiveBigIntegerField(null=True, blank=True)
    pending_amount = models.PositiveBigIntegerField(null=True, blank=True)
    pending_from = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "currency"], name="accounts_spending_limit_one")]
        verbose_name = _("spending limit")
        verbose_name_plural = _("spending limits")

    def __str__(self) -> str:
        return f"{self.user_id} {self.currency} {self.amount}"

    def effective_amount(self, now) -> int | None:
        if self.pending_from is not None and self.pending_from <= now:
            return self.pending_amount
        return self.amount


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


class AccountApiToken(models.Model):
    """Any user's API token, issued by `POST /api/v1/auth/token/` or on the security page (`Authorization:
    Token cka_…`). Only its SHA-256 digest is stored. It works where its user works: buyer endpoints,
    the merchant API for a merchant's owner (within `scopes`), the staff API for staff (issued only
    after a second factor)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="account_api_tokens")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    # What a merchant's token may do in the merchant API ("read", "stock", "orders", "money"); empty
    # for staff and buyers, whose endpoints do not ask.
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField()
    created_ip = models.GenericIPAddressField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class SignInMethod(models.TextChoices):
    PAGE = "page", _("Sign-in page")
    API = "api", _("API token")
    SIGNUP = "signup", _("Sign-up")


class SignIn(models.Model):
    """One sign-in attempt on a known account, good or bad: the login history and the risk engine's
    "new device / new network" signal read it. Written only by `accounts.services.sign_in_record`."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sign_ins")
    at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    network = models.CharField(max_length=64, blank=True)  # the /24 or /48 (core.device.network_of)
    user_agent = models.CharField(max_length=512, blank=True)
    device = models.CharField(max_length=64, blank=True)  # the device cookie's id; "" for API clients
    method = models.CharField(max_length=16, choices=SignInMethod.choices)
    success = models.BooleanField()
    reason = models.CharField(max_length=32, blank=True)  # why a failure failed ("bad_password", "locked_out", …)
    new_place = models.BooleanField(default=False)  # device and network both never seen: an alert went out

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["user", "at"])]
        verbose_name = _("sign-in")
        verbose_name_plural = _("sign-ins")

    def __str__(self) -> str:
        return f"{self.user_id} {self.at:%Y-%m-%d %H:%M:%S} {'ok' if self.success else 'failed'}"


class UserSession(models.Model):
    """A signed-in browser session, so its owner can see it and end it. The session holds `public_id`
    (it survives the key change at the second factor); `accounts.sessions.SessionTrackingMiddleware`
    signs out any session whose row is ended or missing."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tracked_sessions")
    public_id = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    device = models.CharField(max_length=64, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at", "-pk"]
        indexes = [models.Index(fields=["user", "ended_at"])]
        verbose_name = _("session")
        verbose_name_plural = _("sessions")

    def __str__(self) -> str:
        return f"session {self.public_id[:6]}… of {self.user_id}"


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


class Notification(models.Model):
    """One line in a signed-in user's in-site inbox (dispute steps, new paid orders, …).

    Any app may post one (`accounts.services.notification_post`): accounts is below them all. `key`
    makes posting idempotent, so a retried task finds the line it already wrote. `read_at` is set when
    the reader opens it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbox")
    event = models.CharField(max_length=64)  # what happened: "order.paid", "dispute.opened", …
    subject = models.CharField(max_length=64, blank=True)  # what it is about: "order:3", "dispute:12"
    key = models.CharField(max_length=120, null=True, blank=True)
    text = models.CharField(max_length=200)
    url = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        indexes = [models.Index(fields=["user", "read_at"], name="accounts_notification_unread")]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "key"], condition=models.Q(key__isnull=False), name="notification_once_per_key"
            )
        ]

    def __str__(self) -> str:
        return f"notification {self.pk} for user {self.user_id}"


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
