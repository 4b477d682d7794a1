"""A merchant's stock outside orders and uploads: importing a batch of keys (seed data, benches,
tests), revoking unsold keys, and recording an export so exported keys never go back on sale.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import audit_record
from shop import crypto
from shop.models import CARD_KEY_TRANSITIONS, CardKey, CardKeyStatus, Product
from shop.services.errors import ShopError
from shop.services.merchants import merchant_data_key
from shop.services.products import product_low_stock_check
from shop.services.stock_copy import card_keys_insert_skipping_duplicates


@dataclass(frozen=True)
class ImportCounts:
    imported: int
    duplicates: int


@transaction.atomic(durable=True)
def keys_import_batch(*, product: Product, keys: Iterable[str], now: datetime) -> ImportCounts:
    """Seal and insert one batch of keys; a key the merchant already has (or a repeat in the batch) is
    counted as a duplicate, not inserted. Keys are normalised here; empty ones are skipped.

    The (merchant, fingerprint) constraint decides duplicates, so two imports racing on the same key
    cannot both insert it. Uploads go through `stock_upload_start`; this is for seeding and tests.
    """
    merchant = product.merchant
    sealer = crypto.CardKeySealer(data_key=merchant_data_key(merchant), merchant_pk=merchant.pk, product_pk=product.pk)
    rows, seen, offered = [], set(), 0
    for raw in keys:
        key = crypto.normalise(raw)
        if not key:
            continue
        offered += 1
        fingerprint = sealer.fingerprint(key)
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        rows.append(
            (product.pk, merchant.pk, None, fingerprint, sealer.seal(key, fingerprint), CardKeyStatus.AVAILABLE, now)
        )
    rows.sort(key=lambda row: row[3])
    imported = len(card_keys_insert_skipping_duplicates(rows))
    return ImportCounts(imported=imported, duplicates=offered - imported)


@transaction.atomic(durable=True)
def keys_revoke(*, product: Product, actor: User | None, now: datetime, keys: Iterable[str] | None = None) -> int:
    """Revoke the product's available keys: those listed in `keys` (matched by fingerprint, nothing is
    decrypted), or all of them when `keys` is None. Reserved and sold keys are left alone; a revoked key
    never sells. Returns how many were revoked."""
    unsold = CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE)
    if keys is not None:
        fingerprints = {
            crypto.fingerprint(k, merchant_pk=product.merchant_id) for k in map(crypto.normalise, keys) if k
        }
        if not fingerprints:
            raise ShopError(_("List at least one key to revoke."), "no_keys")
        unsold = unsold.filter(fingerprint__in=fingerprints)
    revoked = CARD_KEY_TRANSITIONS.update(queryset=unsold, to=CardKeyStatus.REVOKED, from_=[CardKeyStatus.AVAILABLE])
    audit_record(
        action=AuditAction.STOCK_REVOKED,
        subject=product,
        now=now,
        actor=actor,
        data={"count": revoked, "all": keys is None},
    )
    product_low_stock_check(product_pk=product.pk, now=now)
    return revoked


@transaction.atomic(durable=True)
def keys_export_record(*, product: Product, actor: User, now: datetime) -> int:
    """Record that the merchant exports the product's unsold keys (the caller checked their password).

    Each exported key is marked `exported_at=now`, so a refund never returns it to stock. Returns how
    many keys the export holds; the plaintext comes from `selectors.product_unsold_keys_plaintext`
    with the same `exported_at`.
    """
    count = CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).update(exported_at=now)
    audit_record(action=AuditAction.STOCK_EXPORTED, subject=product, now=now, actor=actor, data={"count": count})
    return count
