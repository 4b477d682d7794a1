from django.db.models import Count, Q, QuerySet

from shop import crypto
from shop.models import CardKey, CardKeyStatus, MerchantStatus, Product, ProductStatus
from shop.services import merchant_data_key


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
        CardKey.objects.filter(order_id=order_pk, status=CardKeyStatus.SOLD)
        .select_related("merchant")
        .order_by("pk")
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
