from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from core.money import Currency
from core.transitions import Transitions


class MerchantStatus(models.TextChoices):
    PENDING = "pending", _("Waiting for approval")
    APPROVED = "approved", _("Approved")
    REJECTED = "rejected", _("Rejected")


MERCHANT_TRANSITIONS = Transitions(
    {
        MerchantStatus.PENDING: {MerchantStatus.APPROVED, MerchantStatus.REJECTED},
        MerchantStatus.REJECTED: {MerchantStatus.APPROVED},
    }
)


class Merchant(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="merchant")
    name = models.CharField(_("shop name"), max_length=100)
    contact = models.CharField(_("contact"), max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=MerchantStatus.choices, default=MerchantStatus.PENDING)
    rejection_reason = models.TextField(blank=True)
    # Merchant settings: an e-mail and an inbox line for each newly paid order (escrow.notifications).
    notify_paid_orders = models.BooleanField(_("tell me about each paid order"), default=True)
    fee_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_("Empty: the platform default (PLATFORM_FEE_PERCENT)."),
    )
    # The merchant's data key, sealed under a master key (see shop/crypto.py).
    data_key_version = models.CharField(max_length=32)
    data_key_wrapped = models.BinaryField()
    created_at = models.DateTimeField()
    # Set by staff rejection: the KYC document is deleted KYC_REJECTED_RETENTION_DAYS after it.
    rejected_at = models.DateTimeField(null=True, blank=True)
    # Set when staff approved the merchant with their KYC submission in front of them (see MerchantKyc):
    # the public "verified" badge. Kept here so a page of catalogue cards needs no join for it.
    verified_at = models.DateTimeField(null=True, blank=True)
    # Whether the merchant has registered any webhook endpoint (of any status), kept in step by the
    # endpoints' create and delete (shop/services/webhooks.py, under this row's lock). A caller that
    # already holds the merchant's row (a payment) then skips the endpoint query for the many merchants
    # with none. Never False while an endpoint exists; True with none left only costs that query.
    has_webhook_endpoints = models.BooleanField(default=False, editable=False)

    class Meta:
        verbose_name = _("merchant")
        verbose_name_plural = _("merchants")

    def __str__(self) -> str:
        return self.name

    @property
    def is_approved(self) -> bool:
        return self.status == MerchantStatus.APPROVED

    @property
    def is_verified(self) -> bool:
        """Approved after staff checked their legal or business name and document (the public badge)."""
        return self.status == MerchantStatus.APPROVED and self.verified_at is not None


class KycKind(models.TextChoices):
    INDIVIDUAL = "individual", _("An individual (identity document)")
    BUSINESS = "business", _("A business (business licence)")


class MerchantKyc(models.Model):
    """A merchant's qualification (商户资质): who they are and the document that shows it.

    The document is private: sealed with the merchant's data key (shop/crypto.py) in a file under
    KYC_FILES_ROOT, outside the static and media roots, and served only to staff with a verified
    second factor (`staff.views.kyc_document`). It is deleted KYC_REJECTED_RETENTION_DAYS after a
    rejection (`services.merchant_kyc_documents_purge`, on the beat schedule); the row stays, with
    `document_deleted_at`, so the audit trail still points somewhere.
    """

    merchant = models.OneToOneField(Merchant, on_delete=models.PROTECT, related_name="kyc")
    kind = models.CharField(_("applying as"), max_length=16, choices=KycKind.choices)
    legal_name = models.CharField(_("legal or business name"), max_length=200)
    # A random name (no trace of the uploaded file's name), the type we checked it to be, and its size
    # and SHA-256 before sealing (so staff can match what they saw with what the merchant sent).
    document_name = models.CharField(max_length=64, blank=True)
    document_content_type = models.CharField(max_length=64, blank=True)
    document_size = models.PositiveIntegerField(default=0)
    document_sha256 = models.CharField(max_length=64, blank=True)
    submitted_at = models.DateTimeField()
    document_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("merchant qualification")
        verbose_name_plural = _("merchant qualifications")

    def __str__(self) -> str:
        return f"KYC of merchant {self.merchant_id}"

    @property
    def has_document(self) -> bool:
        return bool(self.document_name) and self.document_deleted_at is None


class Category(models.Model):
    """A catalogue section, defined by staff (in the admin); a merchant puts each product in one.

    Staff write the name in both languages: it is data, not a message in the translation catalogue.
    """

    slug = models.SlugField(_("slug"), max_length=64, unique=True, help_text=_("In the catalogue's address."))
    name = models.CharField(_("name (English)"), max_length=64)
    name_zh_hans = models.CharField(_("name (Simplified Chinese)"), max_length=64, blank=True)
    position = models.PositiveSmallIntegerField(_("position"), default=0)
    # New products here (and products moved here) wait for staff review before they are listed.
    is_sensitive = models.BooleanField(
        _("sensitive"),
        default=False,
        help_text=_("New products in this category wait for staff review before they are listed."),
    )

    class Meta:
        ordering = ["position", "pk"]
        verbose_name = _("category")
        verbose_name_plural = _("categories")

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """The name in the reader's language (the English one where no Chinese name was given)."""
        if (get_language() or "").lower().startswith("zh") and self.name_zh_hans:
            return self.name_zh_hans
        return self.name


class ProductStatus(models.TextChoices):
    ACTIVE = "active", _("On sale")
    PAUSED = "paused", _("Paused")
    # Not listed, not purchasable until staff approve it (see ProductReviewReason).
    AWAITING_REVIEW = "awaiting_review", _("Awaiting review")
    REJECTED = "rejected", _("Rejected by staff")


class ProductReviewReason(models.TextChoices):
    SENSITIVE_CATEGORY = "sensitive_category", _("In a sensitive category")
    MERCHANT_RESERVE_RAISED = "merchant_reserve_raised", _("The merchant's dispute rate raised their reserve")


# Long enough for any listing; short enough that saving one (and rendering it, see shop/markdown.py) is cheap.
DESCRIPTION_MAX_LENGTH = 20_000


class Product(models.Model):
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="products")
    title = models.CharField(_("title"), max_length=200)
    # Markdown or plain text, as the merchant wrote it (the API returns it); a TextField's max_length only
    # bounds forms, so the services check it too.
    description = models.TextField(_("description"), max_length=DESCRIPTION_MAX_LENGTH, blank=True)
    # The description rendered and sanitised when it was saved (services.product_create / product_update):
    # pages show this and never render Markdown.
    description_html = models.TextField(blank=True, editable=False)
    price = models.PositiveBigIntegerField(_("price (minor units)"))
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices, default=Currency.CNY)
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.PROTECT, related_name="products", verbose_name=_("category")
    )
    # Wholesale prices: [[min_quantity, unit_price], …] ascending, each from min_quantity keys up (see
    # shop/pricing.py). Empty: one price whatever the quantity. Checked by services.price_tiers_check.
    price_tiers = models.JSONField(_("wholesale price tiers"), default=list, blank=True)
    inspection_hours = models.PositiveIntegerField(_("inspection window (hours)"), default=24)
    max_per_order = models.PositiveIntegerField(_("maximum quantity per order"), default=10)
    low_stock_threshold = models.PositiveIntegerField(_("low-stock threshold"), default=10)
    status = models.CharField(max_length=16, choices=ProductStatus.choices, default=ProductStatus.ACTIVE)
    # Set when the low-stock e-mail goes out, cleared when stock is back at the threshold: one e-mail
    # per dip, not one per sale (see services.product_low_stock_check).
    low_stock_notified_at = models.DateTimeField(null=True, blank=True)
    # Staff review (ProductStatus.AWAITING_REVIEW): why it waits, since when, and staff's answer (the
    # merchant reads the note of a rejection).
    review_reason = models.CharField(max_length=32, choices=ProductReviewReason.choices, blank=True)
    review_requested_at = models.DateTimeField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["pk"]
        verbose_name = _("product")
        verbose_name_plural = _("products")
        constraints = [models.CheckConstraint(condition=Q(price__gt=0), name="product_price_positive")]

    def __str__(self) -> str:
        return self.title


class CardKeyStatus(models.TextChoices):
    AVAILABLE = "available", _("Available")
    RESERVED = "reserved", _("Reserved")
    SOLD = "sold", _("Sold")
    REVOKED = "revoked", _("Revoked")
    # Swapped for a fresh key in a dispute: kept on its order as evidence, never sold again.
    REPLACED = "replaced", _("Replaced")


CARD_KEY_TRANSITIONS = Transitions(
    {
        CardKeyStatus.AVAILABLE: {CardKeyStatus.RESERVED, CardKeyStatus.REVOKED},
        CardKeyStatus.RESERVED: {CardKeyStatus.AVAILABLE, CardKeyStatus.SOLD},
        CardKeyStatus.SOLD: {CardKeyStatus.AVAILABLE, CardKeyStatus.REVOKED, CardKeyStatus.REPLACED},
    }
)


class CardKey(models.Model):
    """One code for sale, sealed (never stored in plaintext). See shop/crypto.py."""

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="card_keys")
    # Denormalised from the product so that "unique per merchant" is a plain database constraint.
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    fingerprint = models.BinaryField(max_length=32)
    sealed = models.BinaryField()
    status = models.CharField(max_length=16, choices=CardKeyStatus.choices, default=CardKeyStatus.AVAILABLE)
    order = models.ForeignKey("escrow.Order", null=True, blank=True, on_delete=models.PROTECT, related_name="card_keys")
    # The upload that brought the key in; tells "duplicate in the file" from "duplicate of existing stock".
    # No database FK constraint: its per-row check at commit costs a third of a bulk import's commit, and
    # uploads are never deleted (the admin cannot, and no service does).
    upload = models.ForeignKey(
        "shop.StockUpload",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    created_at = models.DateTimeField()
    # Set when the key left the shop in a merchant's stock export: from then on someone outside may hold
    # it, so a refund never puts it back on sale.
    exported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("card key")
        verbose_name_plural = _("card keys")
        constraints = [
            models.UniqueConstraint(fields=["merchant", "fingerprint"], name="card_key_unique_per_merchant"),
        ]
        indexes = [
            # Claims walk only the unsold keys of one product, in key order (see DESIGN.md). The order is
            # `id + 0`, not `id` (AVAILABLE_KEY_ORDER_SQL): the primary key also gives `id` order, and
            # PostgreSQL reckons a product's first key lies a few rows into it, as if every product's
            # keys were spread evenly. For a product holding a good share of the keys it walked the
            # primary key instead of this index, and a claim of the product uploaded last stepped over
            # every earlier key (12 ms of the server's CPU per checkout with two products of 40,000
            # keys, against 0.07 ms). No other index gives `id + 0` order: this one is the only path.
            models.Index(
                F("product"),
                F("id") + 0,
                name="card_key_available_idx",
                condition=Q(status=CardKeyStatus.AVAILABLE),
            ),
        ]

    def __str__(self) -> str:
        return f"card key {self.pk} ({self.status})"


# A product's available keys in the order claims take them, as `card_key_available_idx` holds them (why
# `id + 0` and not `id`: its comment): the SQL of the hot paths' own statements, and for the ORM.
AVAILABLE_KEY_ORDER_SQL = "id + 0"


def available_key_order():
    return F("id") + 0


# --- product state, stock uploads, API tokens ------------------------------------------------------

# A merchant pauses and resumes (`from_=[PAUSED]`: resuming never skips a review); staff approve or
# reject what awaits review; a product moved into a sensitive category goes back to review; a rejected
# product, edited, may ask again.
PRODUCT_TRANSITIONS = Transitions(
    {
        ProductStatus.ACTIVE: {ProductStatus.PAUSED, ProductStatus.AWAITING_REVIEW},
        ProductStatus.PAUSED: {ProductStatus.ACTIVE, ProductStatus.AWAITING_REVIEW},
        ProductStatus.AWAITING_REVIEW: {ProductStatus.ACTIVE, ProductStatus.REJECTED},
        ProductStatus.REJECTED: {ProductStatus.AWAITING_REVIEW},
    }
)


class StockDelimiter(models.TextChoices):
    """How an upload is split into keys. A line is never split on whitespace, so a card number and its
    PIN written on one line ("6225 0000 1111 2222 PIN 1234") stay one key."""

    NEWLINE = "newline", _("One key per line")
    COMMA = "comma", _("Comma (,)")
    SEMICOLON = "semicolon", _("Semicolon (;)")
    TAB = "tab", _("Tab")
    PIPE = "pipe", _("Vertical bar (|)")


DELIMITER_CHARACTERS = {
    StockDelimiter.NEWLINE: None,
    StockDelimiter.COMMA: ",",
    StockDelimiter.SEMICOLON: ";",
    StockDelimiter.TAB: "\t",
    StockDelimiter.PIPE: "|",
}


class StockUploadStatus(models.TextChoices):
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


STOCK_UPLOAD_TRANSITIONS = Transitions({StockUploadStatus.RUNNING: {StockUploadStatus.DONE, StockUploadStatus.FAILED}})


class StockUploadSource(models.TextChoices):
    PASTE = "paste", _("Pasted text")
    FILE = "file", _("File")
    API = "api", _("API")


class StockUpload(models.Model):
    """One batch of keys sent by a merchant, imported in the background (see services.stock_upload_process).

    `processed` (entries done) is where a re-run task resumes: each batch commits its keys, its rejected
    entries and these counters together, so a task that dies half-way and runs again finishes the job
    exactly once.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="stock_uploads")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="stock_uploads")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    source = models.CharField(max_length=8, choices=StockUploadSource.choices)
    original_name = models.CharField(max_length=255, blank=True)
    # Path relative to MEDIA_ROOT; the file is deleted once the import ends (it holds plaintext keys).
    file_path = models.CharField(max_length=255, blank=True)
    delimiter = models.CharField(max_length=16, choices=StockDelimiter.choices, default=StockDelimiter.NEWLINE)
    encoding = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=StockUploadStatus.choices, default=StockUploadStatus.RUNNING)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    # The database's clock at the last committed batch (or when the sweeper last queued the import
    # again): a running upload that has not moved for SHOP_STOCK_UPLOAD_STALL_SECONDS lost its worker.
    progressed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("stock upload")
        verbose_name_plural = _("stock uploads")

    def __str__(self) -> str:
        return f"stock upload {self.pk} ({self.status})"

    @property
    def percent(self) -> int:
        if self.status != StockUploadStatus.RUNNING:
            return 100
        return int(100 * self.processed / self.total) if self.total else 0


class RejectionReason(models.TextChoices):
    EMPTY = "empty", _("Empty")
    TOO_LONG = "too_long", _("Too long (over 1,024 characters)")
    DUPLICATE_IN_FILE = "duplicate_in_file", _("Duplicate in the file")
    DUPLICATE_EXISTING = "duplicate_existing", _("Duplicate of existing stock")


class StockUploadRejection(models.Model):
    """One entry of an upload that was not imported: where it was and why (never what it was)."""

    upload = models.ForeignKey(StockUpload, on_delete=models.CASCADE, related_name="rejections")
    line = models.PositiveIntegerField()
    # Its place on that line (1 unless the upload splits lines on a delimiter): "line 1, entry 5,000".
    entry = models.PositiveIntegerField(default=1)
    reason = models.CharField(max_length=32, choices=RejectionReason.choices)

    class Meta:
        ordering = ["upload", "line", "entry", "pk"]
        indexes = [models.Index(fields=["upload", "line", "entry"], name="stock_rejection_place_idx")]

    def __str__(self) -> str:
        return f"line {self.line}, entry {self.entry}: {self.reason}"


class ApiScope(models.TextChoices):
    """What a merchant API token may do (chosen at its creation; a call outside them answers 403 `scope`)."""

    READ = "read", _("read: see products and stock")
    STOCK = "stock", _("stock: change products, upload and revoke stock")
    ORDERS = "orders", _("orders: see orders and refund them")
    MONEY = "money", _("money: balance, statement, payout accounts and withdrawals")


def api_scopes_all() -> list[str]:
    """Every scope (tokens made before scopes existed were given all of them)."""
    return list(ApiScope.values)


class MerchantApiToken(models.Model):
    """A merchant's API token. Only its SHA-256 digest is stored; the token is shown once, at creation."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A list of `ApiScope` values: what the token may call (read through `request.auth.scopes`).
    scopes = models.JSONField(_("scopes"), default=api_scopes_all)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("merchant API token")
        verbose_name_plural = _("merchant API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# --- coupons ---------------------------------------------------------------------------------------


class CouponKind(models.TextChoices):
    PERCENT = "percent", _("Percentage off")
    FIXED = "fixed", _("Fixed amount off")


class Coupon(models.Model):
    """A merchant's discount code: a percentage or a fixed amount off one product or the whole shop.

    `uses` counts orders that took it; the check constraint makes "at most `max_uses`" the database's
    rule, and services.coupon_redeem counts a use by one conditional UPDATE inside the checkout's
    transaction, so racing checkouts take it exactly up to the limit.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="coupons")
    # Empty: every product of the merchant.
    product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.PROTECT, related_name="coupons", verbose_name=_("product")
    )
    code = models.CharField(_("code"), max_length=32)  # stored upper case: buyers type it any way
    kind = models.CharField(_("kind"), max_length=8, choices=CouponKind.choices)
    # Percent (1-99: an order always costs something) or an amount in minor units of `currency`.
    value = models.PositiveBigIntegerField(_("value"))
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices, blank=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    max_uses = models.PositiveIntegerField(_("use limit"), null=True, blank=True)
    uses = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("coupon")
        verbose_name_plural = _("coupons")
        constraints = [
            models.UniqueConstraint(fields=["merchant", "code"], name="coupon_code_unique_per_merchant"),
            models.CheckConstraint(
                condition=Q(max_uses__isnull=True) | Q(uses__lte=F("max_uses")), name="coupon_uses_within_limit"
            ),
            models.CheckConstraint(
                condition=Q(kind="fixed") | Q(value__gte=1, value__lte=99), name="coupon_percent_1_to_99"
            ),
        ]

    def __str__(self) -> str:
        return self.code


# --- webhooks to merchants ---------------------------------------------------------------------------
# Here, not in escrow, because shop itself emits `stock.low` and shop may not import escrow; escrow and
# disputes emit through `shop.services.webhook_emit` (shop/services/webhooks.py).


class WebhookEventType(models.TextChoices):
    ORDER_PAID = "order.paid", _("Order paid")
    ORDER_DELIVERED = "order.delivered", _("Order delivered")
    ORDER_COMPLETED = "order.completed", _("Order completed (money released)")
    ORDER_REFUNDED = "order.refunded", _("Order refunded")
    DISPUTE_OPENED = "dispute.opened", _("Dispute opened")
    DISPUTE_DECIDED = "dispute.decided", _("Dispute decided")
    STOCK_LOW = "stock.low", _("Stock low")
    WITHDRAWAL_PAID = "withdrawal.paid", _("Withdrawal paid")


class WebhookEndpointStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    DISABLED = "disabled", _("Disabled")


WEBHOOK_ENDPOINT_TRANSITIONS = Transitions(
    {
        WebhookEndpointStatus.ACTIVE: {WebhookEndpointStatus.DISABLED},
        WebhookEndpointStatus.DISABLED: {WebhookEndpointStatus.ACTIVE},
    }
)


class WebhookEndpoint(models.Model):
    """A merchant's URL that receives signed events. The signing secret is sealed (we must sign with it,
    so it cannot be hashed); it is shown once, at creation and at each rotation."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.CharField(_("URL"), max_length=500)
    events = models.JSONField(_("events"), default=list)
    description = models.CharField(_("description"), max_length=100, blank=True)
    secret_sealed = models.BinaryField()
    status = models.CharField(
        max_length=16, choices=WebhookEndpointStatus.choices, default=WebhookEndpointStatus.ACTIVE
    )
    disabled_reason = models.CharField(max_length=32, blank=True)  # "failing" or "merchant"
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    secret_rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")
        # Emitting asks "which active endpoints does this merchant have?" on every order event.
        indexes = [models.Index(fields=["merchant"], condition=Q(status="active"), name="webhook_endpoint_active_idx")]

    def __str__(self) -> str:
        return self.url

    @property
    def is_active(self) -> bool:
        return self.status == WebhookEndpointStatus.ACTIVE


class WebhookEvent(models.Model):
    """One event as sent: `body` is the exact JSON every delivery of it posts (and signs)."""

    public_id = models.CharField(max_length=40, unique=True)  # "evt_…", the body's "id"
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    type = models.CharField(max_length=32, choices=WebhookEventType.choices)
    body = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"{self.public_id} {self.type}"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SUCCEEDED = "succeeded", _("Delivered")
    FAILED = "failed", _("Failed")


WEBHOOK_DELIVERY_TRANSITIONS = Transitions(
    {
        WebhookDeliveryStatus.PENDING: {WebhookDeliveryStatus.SUCCEEDED, WebhookDeliveryStatus.FAILED},
        # "Resend" from the log.
        WebhookDeliveryStatus.SUCCEEDED: {WebhookDeliveryStatus.PENDING},
        WebhookDeliveryStatus.FAILED: {WebhookDeliveryStatus.PENDING},
    }
)


class WebhookDelivery(models.Model):
    """One event to one endpoint: the outbox row, written in the transaction of the event itself. A
    pending row is due at `next_attempt_at`; the sweeper re-queues due rows, so nothing is lost."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(
        max_length=16, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    give_up_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        constraints = [models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_once")]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="webhook_delivery_due_idx")
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id}: {self.status}"
