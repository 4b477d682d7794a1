from collections.abc import Iterator
from datetime import datetime

from django.db.models import Count, Q, QuerySet

from shop import crypto
from shop.models import (
    CardKey,
    CardKeyStatus,
    Merchant,
    MerchantApiToken,
    MerchantStatus,
    Product,
    ProductStatus,
    StockUpload,
)
from shop.services import api_token_digest, merchant_data_key


def products_on_sale() -> QuerySet[Product]:
    """Products a buyer may see, each annotated with `stock` (available keys)."""
    return (
        Product.objects.filter(status=ProductStatus.ACTIVE, merchant__status=MerchantStatus.APPROVED)
        .select_related("merchant")
        .annotate(stock=Count("card_keys", filter=Q(card_keys__status=CardKeyStatus.AVAILABLE)))
        .order_by("pk")
    )


def order_keys_plaintext(*, order_pk: int) -> list[str]:
    """Open the sold keys of one order. Callers check that the viewer owns the order first."""
    keys = list(
        CardKey.objects.filter(order_id=order_pk, status=CardKeyStatus.SOLD).select_related("merchant").order_by("pk")
    )
    if not keys:
        return []
    data_key = merchant_data_key(keys[0].merchant)
    return [
        crypto.card_key_open(
            data_key=data_key,
            sealed=key.sealed,
            aad=crypto.card_key_aad(product_pk=key.product_id, fingerprint=bytes(key.fingerprint)),
        )
        for key in keys
    ]


def merchant_products_with_stock(*, merchant: Merchant) -> QuerySet[Product]:
    """The merchant's products, each annotated with `available`, `reserved`, `sold` and `revoked`
    counts: one query (conditional aggregation over one join), however many products there are."""
    counts = {
        status.value: Count("card_keys", filter=Q(card_keys__status=status))
        for status in (CardKeyStatus.AVAILABLE, CardKeyStatus.RESERVED, CardKeyStatus.SOLD, CardKeyStatus.REVOKED)
    }
    return Product.objects.filter(merchant=merchant).annotate(**counts).order_by("pk")


def merchant_product(*, merchant: Merchant, pk: int) -> Product | None:
    return Product.objects.filter(merchant=merchant, pk=pk).first()


def merchant_upload(*, merchant: Merchant, pk: int) -> StockUpload | None:
    return StockUpload.objects.select_related("product").filter(merchant=merchant, pk=pk).first()


def merchant_uploads(*, merchant: Merchant) -> QuerySet[StockUpload]:
    return StockUpload.objects.filter(merchant=merchant).select_related("product").order_by("-pk")


def product_unsold_keys_plaintext(
    *, product: Product, exported_at: datetime | None = None
) -> Iterator[tuple[int, str, datetime]]:
    """Open the product's available keys, streaming (`(pk, key, created_at)`, in key order). Callers
    check ownership and the password, and record the export (`services.keys_export_record`); with
    `exported_at`, only the keys that export marked (a key added since is not in it)."""
    data_key = merchant_data_key(product.merchant)
    keys = CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE)
    if exported_at is not None:
        keys = keys.filter(exported_at=exported_at)
    rows = keys.order_by("pk").values_list("pk", "fingerprint", "sealed", "created_at")
    for pk, fingerprint, sealed, created_at in rows.iterator(chunk_size=2000):
        aad = crypto.card_key_aad(product_pk=product.pk, fingerprint=bytes(fingerprint))
        yield pk, crypto.card_key_open(data_key=data_key, sealed=sealed, aad=aad), created_at


def api_token_active(*, token: str) -> MerchantApiToken | None:
    """The active token whose digest matches, with its merchant and user, or None."""
    return (
        MerchantApiToken.objects.select_related("merchant__user")
        .filter(digest=api_token_digest(token), revoked_at__isnull=True)
        .first()
    )
