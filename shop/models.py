from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from config.transitions import Transitions
from shop.money import Currency


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
        max_digits=5, decimal_places=2, null=True, blank=True,
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


class Product(models.Model):
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="products")
    title = models.CharField(_("title"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    price = models.PositiveBigIntegerField(_("price (minor units)"))
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices, default=Currency.CNY)
    category = models.CharField(_("category"), max_length=64, blank=True)
    inspection_hours = models.PositiveIntegerField(_("inspection window (hours)"), default=24)
    max_per_order = models.PositiveIntegerField(_("maximum quantity per order"), default=10)
    low_stock_threshold = models.PositiveIntegerField(_("low-stock threshold"), default=10)
    status = models.CharField(max_length=16, choices=ProductStatus.choices, default=ProductStatus.ACTIVE)
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


CARD_KEY_TRANSITIONS = Transitions(
    {
        CardKeyStatus.AVAILABLE: {CardKeyStatus.RESERVED, CardKeyStatus.REVOKED},
        CardKeyStatus.RESERVED: {CardKeyStatus.AVAILABLE, CardKeyStatus.SOLD},
        CardKeyStatus.SOLD: {CardKeyStatus.AVAILABLE, CardKeyStatus.REVOKED},
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
    order = models.ForeignKey(
        "escrow.Order", null=True, blank=True, on_delete=models.PROTECT, related_name="card_keys"
    )
    created_at = models.DateTimeField()

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
