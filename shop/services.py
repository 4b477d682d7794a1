"""Every write of the shop app: merchants, products, card-key stock and its reservation."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from accounts.models import User
from accounts.services import audit_record
from shop import crypto
from shop.models import (
    CARD_KEY_TRANSITIONS,
    CardKey,
    CardKeyStatus,
    Merchant,
    MerchantStatus,
    Product,
)

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 1024


class OutOfStock(Exception):
    def __init__(self, product_pk: int, wanted: int, found: int):
        super().__init__(f"Product {product_pk}: {wanted} wanted, {found} available.")
        self.wanted = wanted
        self.found = found


@transaction.atomic
def merchant_create(
    *, user: User, name: str, contact: str = "", now: datetime, status: str = MerchantStatus.PENDING
) -> Merchant:
    """Create a merchant with its own data key, sealed under the newest master key."""
    merchant = Merchant.objects.create(
        user=user, name=name, contact=contact, status=status, created_at=now,
        data_key_version="", data_key_wrapped=b"",
    )
    version, wrapped = crypto.data_key_wrap(data_key=crypto.data_key_generate(), merchant_pk=merchant.pk)
    Merchant.objects.filter(pk=merchant.pk).update(data_key_version=version, data_key_wrapped=wrapped)
    merchant.data_key_version, merchant.data_key_wrapped = version, wrapped
    audit_record(action="merchant.created", subject=merchant, now=now, actor=user)
    return merchant


def merchant_data_key(merchant: Merchant) -> bytes:
    return crypto.data_key_unwrap(
        version=merchant.data_key_version, wrapped=merchant.data_key_wrapped, merchant_pk=merchant.pk
    )


@transaction.atomic
def product_create(
    *, merchant: Merchant, title: str, price: int, currency: str, now: datetime, **fields: object
) -> Product:
    return Product.objects.create(
        merchant=merchant, title=title, price=price, currency=currency, created_at=now, **fields
    )


@dataclass(frozen=True)
class ImportCounts:
    imported: int
    duplicates: int


def keys_import_batch(*, product: Product, keys: Iterable[str], now: datetime) -> ImportCounts:
    """Seal and insert one batch of keys; a key the merchant already has is counted, not inserted.

    The (merchant, fingerprint) constraint decides duplicates, so two uploads racing on the same key
    cannot both insert it. Keys must already be normalised and non-empty.
    """
    merchant = product.merchant
    data_key = merchant_data_key(merchant)
    index_key = crypto.index_key()
    rows, seen = [], set()
    for key in keys:
        fingerprint = crypto.fingerprint(key, key=index_key)
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        aad = crypto.card_key_aad(product_pk=product.pk, fingerprint=fingerprint)
        rows.append(
            CardKey(
                product=product, merchant=merchant, fingerprint=fingerprint, created_at=now,
                sealed=crypto.card_key_seal(data_key=data_key, plaintext=key, aad=aad),
            )
        )
    with transaction.atomic():
        before = CardKey.objects.filter(product__merchant=merchant, fingerprint__in=seen).count()
        CardKey.objects.bulk_create(rows, ignore_conflicts=True)
        after = CardKey.objects.filter(product__merchant=merchant, fingerprint__in=seen).count()
    imported = after - before
    return ImportCounts(imported=imported, duplicates=len(rows) - imported)


def keys_reserve(*, product: Product, quantity: int, order_pk: int) -> list[int]:
    """Reserve `quantity` available keys of `product` for an order, or raise `OutOfStock`.

    Must run inside the caller's transaction. Keys are taken in primary-key order with
    `FOR UPDATE SKIP LOCKED`, so concurrent checkouts neither wait on each other's rows nor deadlock,
    and no key is ever reserved twice.
    """
    assert transaction.get_connection().in_atomic_block, "keys_reserve needs the caller's transaction"
    pks = list(
        CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE)
        .order_by("pk")
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)[:quantity]
    )
    if len(pks) < quantity:
        raise OutOfStock(product.pk, quantity, len(pks))
    changed = CardKey.objects.filter(pk__in=pks, status=CardKeyStatus.AVAILABLE).update(
        status=CardKeyStatus.RESERVED, order_id=order_pk
    )
    if changed != quantity:  # cannot happen under the row locks; refuse rather than oversell
        raise OutOfStock(product.pk, quantity, changed)
    return pks


def keys_release(*, order_pk: int) -> int:
    """Return an unpaid order's reserved keys to stock. Idempotent."""
    return CardKey.objects.filter(order_id=order_pk, status=CardKeyStatus.RESERVED).update(
        status=CardKeyStatus.AVAILABLE, order=None
    )


def keys_sell(*, order_pk: int) -> int:
    """Mark an order's reserved keys sold. Idempotent: already-sold keys stay as they are."""
    return CardKey.objects.filter(
        order_id=order_pk, status__in=CARD_KEY_TRANSITIONS.sources(CardKeyStatus.SOLD)
    ).update(status=CardKeyStatus.SOLD)
