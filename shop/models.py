from django.conf import settings
from django.db import models
from django.db.models import Q
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

    class Meta:
        verbose_name = _("merchant")
        verbose_name_plural = _("merchants")

    def __str__(self) -> str:
        return self.name

    @property
    def is_approved(self) -> bool:
        return self.status == MerchantStatus.APPROVED


class ProductStatus(models.TextChoices):
    ACTIVE = "active", _("On sale")
    PAUSED = "paused", _("Paused")


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
    category = models.CharField(_("category"), max_length=64, blank=True)
    inspection_hours = models.PositiveIntegerField(_("inspection window (hours)"), default=24)
    max_per_order = models.PositiveIntegerField(_("maximum quantity per order"), default=10)
    low_stock_threshold = models.PositiveIntegerField(_("low-stock threshold"), default=10)
    status = models.CharField(max_length=16, choices=ProductStatus.choices, default=ProductStatus.ACTIVE)
    # Set when the low-stock e-mail goes out, cleared when stock is back at the threshold: one e-mail
    # per dip, not one per sale (see services.product_low_stock_check).
    low_stock_notified_at = models.DateTimeField(null=True, blank=True)
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
            # Claims walk only the unsold keys of one product, in key order (see DESIGN.md).
            models.Index(
                fields=["product", "id"],
                name="card_key_available_idx",
                condition=Q(status=CardKeyStatus.AVAILABLE),
            ),
        ]

    def __str__(self) -> str:
        return f"card key {self.pk} ({self.status})"


# --- product state, stock uploads, API tokens ------------------------------------------------------

PRODUCT_TRANSITIONS = Transitions(
    {
        ProductStatus.ACTIVE: {ProductStatus.PAUSED},
        ProductStatus.PAUSED: {ProductStatus.ACTIVE},
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


class MerchantApiToken(models.Model):
    """A merchant's API token. Only its SHA-256 digest is stored; the token is shown once, at creation."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("merchant API token")
        verbose_name_plural = _("merchant API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
