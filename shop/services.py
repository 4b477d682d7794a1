"""Every write of the shop app: merchants, products, card-key stock and its reservation."""

import hashlib
import io
import logging
import secrets
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import TwoFactorInvalid, TwoFactorRequired, audit_record, otp_fresh_code_check
from core.errors import Refused
from core.transitions import StateError
from shop import crypto, stock_files
from shop.markdown import render_markdown
from shop.models import (
    CARD_KEY_TRANSITIONS,
    DESCRIPTION_MAX_LENGTH,
    MERCHANT_TRANSITIONS,
    PRODUCT_TRANSITIONS,
    STOCK_UPLOAD_TRANSITIONS,
    CardKey,
    CardKeyStatus,
    Merchant,
    MerchantApiToken,
    MerchantStatus,
    Product,
    ProductStatus,
    RejectionReason,
    StockDelimiter,
    StockUpload,
    StockUploadRejection,
    StockUploadSource,
    StockUploadStatus,
)
from shop.stock_files import StockFileError

__all__ = ["StockFileError"]  # re-exported: callers catch it with ShopError

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
        user=user,
        name=name,
        contact=contact,
        status=status,
        created_at=now,
        data_key_version="",
        data_key_wrapped=b"",
    )
    version, wrapped = crypto.data_key_wrap(data_key=crypto.data_key_generate(), merchant_pk=merchant.pk)
    Merchant.objects.filter(pk=merchant.pk).update(data_key_version=version, data_key_wrapped=wrapped)
    merchant.data_key_version, merchant.data_key_wrapped = version, wrapped
    audit_record(action=AuditAction.MERCHANT_CREATED, subject=merchant, now=now, actor=user)
    return merchant


def merchant_data_key(merchant: Merchant) -> bytes:
    return crypto.merchant_data_key(merchant)


def product_title_check(title: str) -> str:
    """A title is one line: it goes into e-mail subjects and page headings as it is."""
    if "".join(title.splitlines()) != title:
        raise ShopError(_("A product title must be one line: remove the line breaks."), "bad_title")
    return title


# Not durable: the admin's change form calls it inside the transaction Django opens for the form.
@transaction.atomic
def product_create(
    *, merchant: Merchant, title: str, price: int, currency: str, now: datetime, **fields: object
) -> Product:
    """List a product; its description (at most DESCRIPTION_MAX_LENGTH characters, else `ShopError`
    `description_too_long` and nothing is created) is rendered to HTML here, once."""
    product_title_check(title)
    fields["description_html"] = _description_html(str(fields.get("description") or ""))
    return Product.objects.create(
        merchant=merchant, title=title, price=price, currency=currency, created_at=now, **fields
    )


def _description_html(description: str) -> str:
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise ShopError(
            _("The description is longer than %(limit)s characters.") % {"limit": f"{DESCRIPTION_MAX_LENGTH:,}"},
            "description_too_long",
        )
    return render_markdown(description)


@dataclass(frozen=True)
class ImportCounts:
    imported: int
    duplicates: int


def card_keys_insert_skipping_duplicates(rows: list[tuple]) -> set[bytes]:
    """Insert card-key rows, skipping any whose (merchant, fingerprint) already exists; return the
    fingerprints that were inserted.

    Each row is `(product_id, merchant_id, upload_id, fingerprint, sealed, status, created_at)`. The unique
    constraint decides, inside the database, so two racing uploads cannot both insert one key; `RETURNING`
    makes the counts exact. Rows should be sorted by fingerprint: racing inserts then take the index
    locks in the same order and cannot deadlock. Must run inside the caller's transaction (the COPY's
    temporary table empties at each commit).
    """
    assert transaction.get_connection().in_atomic_block, "inserting card keys needs the caller's transaction"
    if not rows:
        return set()
    table = CardKey._meta.db_table
    columns = "product_id, merchant_id, upload_id, fingerprint, sealed, status, created_at"
    connection = transaction.get_connection()
    adapt = connection.ops.adapt_datetimefield_value
    rows = [(*row[:6], adapt(row[6])) for row in rows]
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES %s "  # noqa: S608 - table and columns are ours
        "ON CONFLICT (merchant_id, fingerprint) DO NOTHING RETURNING fingerprint"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            return _card_keys_copy_insert_postgresql(cursor.cursor, rows)
        if connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):
            inserted: set[bytes] = set()
            per_statement = 100  # 700 parameters: under every SQLite build's variable limit
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
                cursor.execute(sql.replace("%s", values, 1), [v for row in chunk for v in row])
                inserted.update(bytes(fp) for (fp,) in cursor.fetchall())
            return inserted
        # Portable fallback: one row at a time, the constraint still decides.
        inserted = set()
        for row in rows:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s) "  # noqa: S608
                "ON CONFLICT (merchant_id, fingerprint) DO NOTHING",
                row,
            )
            if cursor.rowcount == 1:
                inserted.add(bytes(row[3]))
        return inserted


def _card_keys_copy_insert_postgresql(cursor, rows: list[tuple]) -> set[bytes]:
    """COPY the batch into a temporary table, then one INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING.

    COPY skips building and parsing a huge VALUES statement (about twice as fast as execute_values);
    the INSERT takes the rows in fingerprint order, so racing batches lock index entries in one order.
    The temporary table lives with the connection and is emptied at each commit.
    """
    cursor.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS shop_cardkey_incoming ("
        " product_id bigint, merchant_id bigint, upload_id bigint, fingerprint bytea, sealed bytea,"
        " status varchar(16), created_at timestamptz) ON COMMIT DELETE ROWS"
    )
    lines = []
    for product_id, merchant_id, upload_id, fingerprint, sealed, status, created_at in rows:
        upload_text = "\\N" if upload_id is None else str(upload_id)
        lines.append(
            f"{product_id}\t{merchant_id}\t{upload_text}\t\\\\x{fingerprint.hex()}\t\\\\x{sealed.hex()}"
            f"\t{status}\t{created_at.isoformat()}\n"
        )
    cursor.copy_expert("COPY shop_cardkey_incoming FROM STDIN", io.StringIO("".join(lines)))
    columns = "product_id, merchant_id, upload_id, fingerprint, sealed, status, created_at"
    cursor.execute(
        f"INSERT INTO {CardKey._meta.db_table} ({columns}) "  # noqa: S608 - our own table and columns
        f"SELECT {columns} FROM shop_cardkey_incoming ORDER BY fingerprint "
        "ON CONFLICT (merchant_id, fingerprint) DO NOTHING RETURNING fingerprint"
    )
    inserted = {bytes(fp) for (fp,) in cursor.fetchall()}
    cursor.execute("TRUNCATE shop_cardkey_incoming")  # a second batch in the same transaction starts empty
    return inserted


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
    changed = CARD_KEY_TRANSITIONS.update(
        queryset=CardKey.objects.filter(pk__in=pks),
        to=CardKeyStatus.RESERVED,
        from_=[CardKeyStatus.AVAILABLE],
        order_id=order_pk,
    )
    if changed != quantity:  # cannot happen under the row locks; refuse rather than oversell
        raise OutOfStock(product.pk, quantity, changed)
    return pks


def keys_release(*, order_pk: int) -> int:
    """Return an unpaid order's reserved keys to stock. Idempotent."""
    assert transaction.get_connection().in_atomic_block, "keys_release needs the caller's transaction"
    return CARD_KEY_TRANSITIONS.update(
        queryset=CardKey.objects.filter(order_id=order_pk),
        to=CardKeyStatus.AVAILABLE,
        from_=[CardKeyStatus.RESERVED],
        order=None,
    )


def keys_sell(*, order_pk: int) -> int:
    """Mark an order's reserved keys sold. Idempotent: already-sold keys stay as they are."""
    assert transaction.get_connection().in_atomic_block, "keys_sell needs the caller's transaction"
    return CARD_KEY_TRANSITIONS.update(queryset=CardKey.objects.filter(order_id=order_pk), to=CardKeyStatus.SOLD)


# --- used by escrow refunds (issue 4): a refunded key goes back on sale or is revoked ----------------


def keys_refund_restock(*, order_pk: int, key_pks: list[int]) -> int:
    """Put these keys of a refunded order back on sale (reserved or sold ones). Idempotent.

    The caller decides which keys nobody can hold (escrow: never revealed); a key that was ever in a
    merchant's export is never put back, whatever the caller asked.
    """
    assert transaction.get_connection().in_atomic_block, "keys_refund_restock needs the caller's transaction"
    return CARD_KEY_TRANSITIONS.update(
        queryset=CardKey.objects.filter(pk__in=key_pks, order_id=order_pk).exclude(
            status=CardKeyStatus.SOLD, exported_at__isnull=False
        ),
        to=CardKeyStatus.AVAILABLE,
        order=None,
    )


def keys_refund_revoke(*, order_pk: int, key_pks: list[int]) -> int:
    """Take these keys of a refunded order out of sale for good; they stay linked to the order as
    evidence. Reserved (never delivered) keys simply go back on sale. Idempotent."""
    assert transaction.get_connection().in_atomic_block, "keys_refund_revoke needs the caller's transaction"
    keys = CardKey.objects.filter(pk__in=key_pks, order_id=order_pk)
    restocked = CARD_KEY_TRANSITIONS.update(
        queryset=keys, to=CardKeyStatus.AVAILABLE, from_=[CardKeyStatus.RESERVED], order=None
    )
    revoked = CARD_KEY_TRANSITIONS.update(queryset=keys, to=CardKeyStatus.REVOKED, from_=[CardKeyStatus.SOLD])
    return restocked + revoked


class KeyNotReplaceable(Exception):
    """The key is not a sold key of that order."""


def key_replace(*, order_pk: int, key_pk: int) -> int:
    """Swap one sold key of an order for a fresh key of the same product; return the fresh key's pk.

    Must run inside the caller's transaction. The fresh key is taken like a sale (`keys_reserve`:
    available keys in key order, `SKIP LOCKED`) and sold to the order; the old key stays on the order
    as evidence, marked replaced, and is never sold again. Raises `KeyNotReplaceable` or `OutOfStock`
    before changing anything.
    """
    assert transaction.get_connection().in_atomic_block, "key_replace needs the caller's transaction"
    old = (
        CardKey.objects.select_for_update(of=("self",))
        .select_related("product")
        .filter(pk=key_pk, order_id=order_pk, status=CardKeyStatus.SOLD)
        .first()
    )
    if old is None:
        raise KeyNotReplaceable(key_pk)
    [fresh_pk] = keys_reserve(product=old.product, quantity=1, order_pk=order_pk)
    CARD_KEY_TRANSITIONS.apply(model=CardKey, pk=fresh_pk, to=CardKeyStatus.SOLD, from_=[CardKeyStatus.RESERVED])
    CARD_KEY_TRANSITIONS.apply(model=CardKey, pk=old.pk, to=CardKeyStatus.REPLACED, from_=[CardKeyStatus.SOLD])
    return fresh_pk


# --- merchants --------------------------------------------------------------------------------------


class ShopError(Refused):
    """A request the shop's rules refuse; the message is for the person, `code` for the API."""


@transaction.atomic(durable=True)
def merchant_signup(*, user: User, name: str, contact: str, now: datetime) -> Merchant:
    """A signed-in user applies to sell: a pending merchant, which staff approve or reject."""
    return _merchant_application(user=user, name=name, contact=contact, now=now)


def _merchant_application(*, user: User, name: str, contact: str, now: datetime) -> Merchant:
    assert transaction.get_connection().in_atomic_block, "a merchant application needs the caller's transaction"
    if Merchant.objects.filter(user=user).exists():
        raise ShopError(_("You have already applied as a merchant."), "already_merchant")
    return merchant_create(user=user, name=name.strip(), contact=contact.strip(), now=now)


@transaction.atomic
def merchant_signup_with_account(
    *, username: str, email: str, password: str, name: str, contact: str, now: datetime
) -> Merchant:
    """A visitor without an account applies to sell: the user and the pending merchant together
    (a step of `merchant_signup_visitor`, inside its transaction)."""
    user = User.objects.create_user(username=username, email=email, password=password)
    return _merchant_application(user=user, name=name, contact=contact, now=now)


def _signup_email(*, to: str, event: str, subject: str, body: str) -> None:
    from django.core.mail import EmailMessage

    EmailMessage(subject=subject, body=body, to=[to], headers={"X-Shop-Event": event}).send(fail_silently=True)


@transaction.atomic(durable=True)
def merchant_signup_visitor(
    *, username: str, email: str, password: str, name: str, contact: str, now: datetime
) -> Merchant | None:
    """A visitor applies to sell with a new account, and learns nothing about other people's accounts.

    A new username and e-mail get the account, the pending merchant and a welcome e-mail. A username
    or e-mail already in use creates nothing: the existing owner gets a notice instead, and the visitor
    sees exactly what a successful applicant sees (the password is hashed either way, so the answer
    takes as long). Returns the merchant, or None when nothing was created.
    """
    from django.contrib.auth.hashers import make_password
    from django.db.models import Q

    email = email.strip()
    owners = list(User.objects.filter(Q(username__iexact=username) | Q(email__iexact=email)).order_by("pk"))
    login_url = settings.SHOP_BASE_URL.rstrip("/") + "/accounts/login/"
    if owners:
        make_password(password)
        for owner in owners:
            if owner.email:
                transaction.on_commit(
                    lambda to=owner.email, who=owner.username: _signup_email(
                        to=to,
                        event="merchant.signup_taken",
                        subject=_("Someone tried to open a shop with your account details"),
                        body=_(
                            "Someone applied to sell on the shop with your username or e-mail address. "
                            "Nothing was changed. If it was you, sign in as %(username)s at %(url)s and apply "
                            "from your account; if not, you can ignore this message."
                        )
                        % {"username": who, "url": login_url},
                    )
                )
        logger.info("shop.merchant_signup_taken", extra={"owners": [owner.pk for owner in owners]})
        return None
    merchant = merchant_signup_with_account(
        username=username, email=email, password=password, name=name, contact=contact, now=now
    )
    transaction.on_commit(
        lambda: _signup_email(
            to=email,
            event="merchant.signup",
            subject=_("Your application to sell on the shop"),
            body=_(
                "Thank you for applying. Staff review your application shortly. Sign in as %(username)s at "
                "%(url)s to follow it."
            )
            % {"username": username, "url": login_url},
        )
    )
    return merchant


@transaction.atomic(durable=True)
def merchant_approve(*, merchant: Merchant, actor: User | None, now: datetime) -> Merchant:
    """Staff approve a pending (or earlier rejected) merchant; a racing second approval fails."""
    MERCHANT_TRANSITIONS.apply(model=Merchant, pk=merchant.pk, to=MerchantStatus.APPROVED, rejection_reason="")
    audit_record(action=AuditAction.MERCHANT_APPROVED, subject=merchant, now=now, actor=actor)
    merchant.refresh_from_db(fields=["status", "rejection_reason"])
    return merchant


@transaction.atomic(durable=True)
def merchant_reject(*, merchant: Merchant, reason: str, actor: User | None, now: datetime) -> Merchant:
    """Staff reject a pending merchant with a reason the merchant reads on their status page."""
    reason = reason.strip()
    if not reason:
        raise ShopError(_("Give the merchant a reason."), "reason_required")
    MERCHANT_TRANSITIONS.apply(
        model=Merchant,
        pk=merchant.pk,
        to=MerchantStatus.REJECTED,
        from_=[MerchantStatus.PENDING],
        rejection_reason=reason,
    )
    audit_record(action=AuditAction.MERCHANT_REJECTED, subject=merchant, now=now, actor=actor, data={"reason": reason})
    merchant.refresh_from_db(fields=["status", "rejection_reason"])
    return merchant


MERCHANT_FIELDS = {"name", "contact", "fee_percent"}


# Not durable: the admin's change form calls it inside the transaction Django opens for the form.
@transaction.atomic
def merchant_update(*, merchant: Merchant, actor: User | None, now: datetime, **fields: object) -> Merchant:
    """Change a merchant's name, contact or fee (`fee_percent`: 0 to 100, None for the platform default).

    Its status moves only through approve/reject. The audit row holds each field's old and new value,
    read under the merchant's row lock; a fee change applies to orders paid from now on."""
    unknown = set(fields) - MERCHANT_FIELDS
    if unknown:
        raise ShopError(f"Not editable: {', '.join(sorted(unknown))}.")
    fee = fields.get("fee_percent")
    if fee is not None and not 0 <= Decimal(fee) <= 100:
        raise ShopError(_("The fee must be between 0 and 100 percent."), "bad_fee")
    old = Merchant.objects.select_for_update().values(*fields).get(pk=merchant.pk) if fields else {}
    Merchant.objects.filter(pk=merchant.pk).update(**fields)
    audit_record(
        action=AuditAction.MERCHANT_UPDATED,
        subject=merchant,
        now=now,
        actor=actor,
        data={"fields": sorted(fields), "old": _json_values(old), "new": _json_values(fields)},
    )
    merchant.refresh_from_db()
    return merchant


def _json_values(values: dict) -> dict:
    """Decimals (a fee) as strings, so an audit row keeps them exactly."""
    return {name: str(value) if isinstance(value, Decimal) else value for name, value in values.items()}


@transaction.atomic
def merchant_data_keys_rewrap(*, now: datetime) -> tuple[int, int]:
    """Re-seal every merchant's data key under the newest master key; card-key rows are not touched.

    All or nothing: if one data key does not open (its master key is missing or wrong), the error names
    the merchant and nothing changes. Returns (re-wrapped, already on the newest key).
    """
    newest, _key = crypto.master_keys()[0]
    rewrapped = current = 0
    for merchant in Merchant.objects.order_by("pk").select_for_update():
        if merchant.data_key_version == newest:
            current += 1
            continue
        data_key = merchant_data_key(merchant)
        version, wrapped = crypto.data_key_wrap(data_key=data_key, merchant_pk=merchant.pk)
        Merchant.objects.filter(pk=merchant.pk).update(data_key_version=version, data_key_wrapped=wrapped)
        audit_record(
            action=AuditAction.MERCHANT_DATA_KEY_REWRAPPED,
            subject=merchant,
            now=now,
            data={"from": merchant.data_key_version, "to": version},
        )
        rewrapped += 1
    return rewrapped, current


# --- products ---------------------------------------------------------------------------------------

PRODUCT_FIELDS = {
    "title",
    "description",
    "price",
    "currency",
    "category",
    "inspection_hours",
    "max_per_order",
    "low_stock_threshold",
}


# Not durable: the admin's change form calls it inside the transaction Django opens for the form.
@transaction.atomic
def product_update(*, product: Product, actor: User | None, now: datetime, **fields: object) -> Product:
    """Change a product's listing (not its status or stock). A new description is bounded and rendered
    to HTML here, as in `product_create`; a refused one changes nothing. The audit row holds each
    field's old and new value, read under the product's row lock."""
    unknown = set(fields) - PRODUCT_FIELDS
    if unknown:
        raise ShopError(f"Not editable: {', '.join(sorted(unknown))}.")
    if "title" in fields:
        product_title_check(str(fields["title"]))
    old = Product.objects.select_for_update().values(*fields).get(pk=product.pk) if fields else {}
    updates = dict(fields)
    if "description" in fields:
        updates["description_html"] = _description_html(str(fields["description"] or ""))
    Product.objects.filter(pk=product.pk).update(**updates)
    audit_record(
        action=AuditAction.PRODUCT_UPDATED,
        subject=product,
        now=now,
        actor=actor,
        data={"fields": sorted(fields), "old": old, "new": fields},
    )
    product.refresh_from_db()
    product_low_stock_check(product_pk=product.pk, now=now)
    return product


@transaction.atomic(durable=True)
def product_pause(*, product: Product, actor: User | None, now: datetime) -> Product:
    """Take a product off sale; its stock stays."""
    PRODUCT_TRANSITIONS.apply(model=Product, pk=product.pk, to=ProductStatus.PAUSED)
    audit_record(action=AuditAction.PRODUCT_PAUSED, subject=product, now=now, actor=actor)
    product.refresh_from_db(fields=["status"])
    return product


@transaction.atomic(durable=True)
def product_resume(*, product: Product, actor: User | None, now: datetime) -> Product:
    """Put a paused product back on sale."""
    PRODUCT_TRANSITIONS.apply(model=Product, pk=product.pk, to=ProductStatus.ACTIVE)
    audit_record(action=AuditAction.PRODUCT_RESUMED, subject=product, now=now, actor=actor)
    product.refresh_from_db(fields=["status"])
    return product


@transaction.atomic
def product_low_stock_check(*, product_pk: int, now: datetime) -> bool:
    """Send the merchant one e-mail when available stock falls below the product's threshold.

    `low_stock_notified_at` is set by compare-and-set when the e-mail is queued (so racing sales send one)
    and cleared once stock is back at or above the threshold, arming the next e-mail. Call it after
    anything that lowers or raises available stock; it is cheap (a count capped at the threshold). Returns whether an
    e-mail was queued.
    """
    product = Product.objects.get(pk=product_pk)
    # Counting stops at the threshold: "below it or not" needs no more rows, and below it the count is exact.
    available = CardKey.objects.filter(product_id=product_pk, status=CardKeyStatus.AVAILABLE)[
        : product.low_stock_threshold
    ].count()
    if available >= product.low_stock_threshold:
        if product.low_stock_notified_at is not None:
            Product.objects.filter(pk=product_pk).update(low_stock_notified_at=None)
        return False
    if product.low_stock_notified_at is not None:  # already told; the compare-and-set below settles races
        return False
    armed = Product.objects.filter(pk=product_pk, low_stock_notified_at__isnull=True).update(low_stock_notified_at=now)
    if armed != 1:
        return False
    audit_record(action=AuditAction.PRODUCT_LOW_STOCK, subject=product, now=now, data={"available": available})
    from shop.tasks import product_low_stock_email_task

    # robust: it runs after a delivery commits; a broker hiccup must not turn that into a failed task.
    transaction.on_commit(
        lambda: product_low_stock_email_task.delay(product_pk=product_pk, available=available), robust=True
    )
    return True


# --- stock uploads ----------------------------------------------------------------------------------


class StockUploadTakenOver(Exception):
    """Another run of the same upload task moved on first; this one stops without writing."""


def _upload_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "stock-uploads" / name


@transaction.atomic(durable=True)
def stock_upload_start(
    *,
    merchant: Merchant,
    product_pk: int,
    chunks: Iterable[bytes],
    source: str,
    delimiter: str = StockDelimiter.NEWLINE,
    original_name: str = "",
    actor: User | None,
    now: datetime,
) -> StockUpload:
    """Accept a file (or pasted text) of keys for one of the merchant's products and queue its import.

    Everything that can be wrong with the input is found here, before anything is imported: another
    merchant's product (`ShopError` with code `not_found`), an unknown delimiter, a file that is not .txt
    or .csv, empty, binary, not UTF-8/GB18030, over the size limit or with more entries than
    SHOP_STOCK_UPLOAD_MAX_LINES, however they are laid out in lines (`StockFileError`). The file is
    kept under MEDIA_ROOT for the worker and deleted when the import ends.
    """
    product = Product.objects.filter(pk=product_pk, merchant=merchant).first()
    if product is None:
        raise ShopError(_("No such product."), "not_found")
    if not merchant.is_approved:
        raise ShopError(_("Your merchant account is not approved yet."), "not_approved")
    if delimiter not in StockDelimiter.values:
        raise ShopError(_("Unknown delimiter %(value)r.") % {"value": delimiter}, "invalid_delimiter")
    if source == StockUploadSource.FILE and not original_name.lower().endswith((".txt", ".csv")):
        raise StockFileError(_("Send a .txt or .csv file."), "invalid_file_type")
    name = f"{uuid.uuid4().hex}.txt"
    path = _upload_path(name)
    stock_files.write_limited(chunks, path, max_bytes=settings.SHOP_STOCK_UPLOAD_MAX_BYTES)
    try:
        info = stock_files.inspect(path, delimiter=delimiter, max_entries=settings.SHOP_STOCK_UPLOAD_MAX_LINES)
        upload = StockUpload.objects.create(
            merchant=merchant,
            product=product,
            created_by=actor if actor and actor.is_authenticated else None,
            source=source,
            original_name=original_name[:255],
            file_path=f"stock-uploads/{name}",
            delimiter=delimiter,
            encoding=info.encoding,
            total=info.entries,
            created_at=now,
        )
        audit_record(
            action=AuditAction.STOCK_UPLOAD_STARTED,
            subject=upload,
            now=now,
            actor=actor,
            data={"product": product.pk, "entries": info.entries, "encoding": info.encoding, "source": source},
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    from shop.tasks import stock_upload_process_task

    transaction.on_commit(lambda: stock_upload_process_task.delay(upload_pk=upload.pk))
    return upload


def stock_upload_process(*, upload_pk: int, now: datetime) -> StockUpload:
    """Import an upload's file in batches; each batch commits its keys, rejected entries and counters.

    The file is read entry by entry (see shop/stock_files.py), so memory stays flat however the keys are
    laid out in lines. Safe to run twice, even at once: each batch first checks, under a row lock, that
    the upload is still where this run left it (`processed`, the entries done), so a second run either
    resumes where the first stopped, mid-line if need be, or stops itself. A bad file or key material
    marks the upload failed with the reason; keys already committed by earlier batches stay (they are
    real stock, counted in `imported`).
    """
    upload = StockUpload.objects.select_related("merchant", "product").get(pk=upload_pk)
    if upload.status != StockUploadStatus.RUNNING:
        return upload
    batch_size = settings.SHOP_STOCK_UPLOAD_BATCH
    path = Path(settings.MEDIA_ROOT) / upload.file_path
    try:
        sealer = crypto.CardKeySealer(
            data_key=merchant_data_key(upload.merchant), merchant_pk=upload.merchant_id, product_pk=upload.product_id
        )
        entries_done = upload.processed
        batch: list[stock_files.Entry] = []
        entries = stock_files.iter_entries(
            path, encoding=upload.encoding, delimiter=upload.delimiter, skip_entries=entries_done
        )
        for entry in entries:
            batch.append(entry)
            if len(batch) >= batch_size:
                _stock_upload_batch_write(
                    upload=upload, sealer=sealer, entries=batch, entries_from=entries_done, now=now
                )
                entries_done, batch = entries_done + len(batch), []
        _stock_upload_batch_write(upload=upload, sealer=sealer, entries=batch, entries_from=entries_done, now=now)
    except StockUploadTakenOver:
        logger.info("shop.stock_upload_taken_over", extra={"upload": upload_pk})
        return StockUpload.objects.get(pk=upload_pk)
    except (OSError, UnicodeDecodeError, crypto.CardKeyCryptoError) as error:
        logger.warning("shop.stock_upload_failed", extra={"upload": upload_pk, "error": str(error)})
        return _stock_upload_finish(upload=upload, status=StockUploadStatus.FAILED, error=str(error), now=now)
    return _stock_upload_finish(upload=upload, status=StockUploadStatus.DONE, error="", now=now)


@transaction.atomic(durable=True)
def _stock_upload_batch_write(
    *,
    upload: StockUpload,
    sealer: crypto.CardKeySealer,
    entries: list[stock_files.Entry],
    entries_from: int,
    now: datetime,
) -> None:
    claimed = (
        StockUpload.objects.select_for_update()
        .filter(pk=upload.pk, status=StockUploadStatus.RUNNING, processed=entries_from)
        .exists()
    )
    if not claimed:
        raise StockUploadTakenOver(upload.pk)
    rejections: list[tuple[stock_files.Entry, str]] = []
    first_seen: dict[bytes, stock_files.Entry] = {}
    rows = []
    for entry in entries:
        key = None if entry.text is None else crypto.normalise(entry.text)
        if key == "":
            rejections.append((entry, RejectionReason.EMPTY))
        elif key is None or len(key) > MAX_KEY_LENGTH:
            rejections.append((entry, RejectionReason.TOO_LONG))
        else:
            fingerprint = sealer.fingerprint(key)
            if fingerprint in first_seen:
                rejections.append((entry, RejectionReason.DUPLICATE_IN_FILE))
                continue
            first_seen[fingerprint] = entry
            rows.append(
                (
                    upload.product_id,
                    upload.merchant_id,
                    upload.pk,
                    fingerprint,
                    sealer.seal(key, fingerprint),
                    CardKeyStatus.AVAILABLE,
                    now,
                )
            )
    rejected = sum(reason in (RejectionReason.EMPTY, RejectionReason.TOO_LONG) for _entry, reason in rejections)
    rows.sort(key=lambda row: row[3])
    inserted = card_keys_insert_skipping_duplicates(rows)
    conflicted = [fp for fp in first_seen if fp not in inserted]
    if conflicted:
        # Who holds the key now: this upload (an earlier batch of the same file) or older stock.
        holders = {
            bytes(fp): upload_id
            for fp, upload_id in CardKey.objects.filter(
                merchant_id=upload.merchant_id, fingerprint__in=conflicted
            ).values_list("fingerprint", "upload_id")
        }
        for fp in conflicted:
            in_file = holders.get(fp) == upload.pk
            reason = RejectionReason.DUPLICATE_IN_FILE if in_file else RejectionReason.DUPLICATE_EXISTING
            rejections.append((first_seen[fp], reason))
    StockUploadRejection.objects.bulk_create(
        [
            StockUploadRejection(upload_id=upload.pk, line=entry.line, entry=entry.number, reason=reason)
            for entry, reason in rejections
        ],
        batch_size=5000,
    )
    StockUpload.objects.filter(pk=upload.pk).update(
        processed=F("processed") + len(entries),
        imported=F("imported") + len(inserted),
        duplicates=F("duplicates") + len(rejections) - rejected,
        rejected=F("rejected") + rejected,
    )


STOCK_UPLOAD_FINISHED = {
    StockUploadStatus.DONE: AuditAction.STOCK_UPLOAD_DONE,
    StockUploadStatus.FAILED: AuditAction.STOCK_UPLOAD_FAILED,
}


@transaction.atomic(durable=True)
def _stock_upload_finish(*, upload: StockUpload, status: str, error: str, now: datetime) -> StockUpload:
    try:
        STOCK_UPLOAD_TRANSITIONS.apply(model=StockUpload, pk=upload.pk, to=status, error=error, finished_at=now)
    except StateError:
        return StockUpload.objects.get(pk=upload.pk)  # another run finished it
    upload.refresh_from_db()
    audit_record(
        action=STOCK_UPLOAD_FINISHED[status],
        subject=upload,
        now=now,
        data={
            "product": upload.product_id,
            "imported": upload.imported,
            "duplicates": upload.duplicates,
            "rejected": upload.rejected,
            "error": error,
        },
    )
    path = Path(settings.MEDIA_ROOT) / upload.file_path
    transaction.on_commit(lambda: path.unlink(missing_ok=True))  # it holds plaintext keys
    product_low_stock_check(product_pk=upload.product_id, now=now)
    return upload


# --- revoking and exporting stock -------------------------------------------------------------------


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


# --- API tokens -------------------------------------------------------------------------------------

API_TOKEN_PREFIX = "cks_"  # noqa: S105 - a label, not a secret


def api_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def merchant_api_token_create(*, merchant: Merchant, name: str, actor: User, code: str, now: datetime):
    """Create an API token after a fresh second factor from `actor`; returns it with its secret, shown
    once and never stored. Refused (`ShopError`, nothing created) without a confirmed TOTP device
    ("two_factor_required") or with a wrong or reused code ("bad_code"): a token acts for the merchant
    without any second factor, so a stolen session alone must not be able to mint one."""
    try:
        otp_fresh_code_check(user=actor, code=code)  # commits on its own: a failure must count
    except TwoFactorRequired:
        raise ShopError(
            _("API tokens need two-factor authentication: set it up first."), "two_factor_required"
        ) from None
    except TwoFactorInvalid:
        raise ShopError(
            _("That code is wrong or was already used. Enter a fresh code from your app."), "bad_code"
        ) from None
    return merchant_api_token_create_unchecked(merchant=merchant, name=name, actor=actor, now=now)


@transaction.atomic(durable=True)
def merchant_api_token_create_unchecked(
    *, merchant: Merchant, name: str, actor: User | None, now: datetime, token: str | None = None
) -> tuple[MerchantApiToken, str]:
    """Create an API token WITHOUT a fresh second factor; returns it with its secret (shown once).

    For `merchant_api_token_create` (which checked one), demo data and tests; a request must never
    reach it."""
    token = token or API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = MerchantApiToken.objects.create(
        merchant=merchant,
        name=name.strip() or _("API token"),
        prefix=token[:10],
        digest=api_token_digest(token),
        created_at=now,
    )
    audit_record(action=AuditAction.API_TOKEN_CREATED, subject=record, now=now, actor=actor, data={"name": record.name})
    return record, token


@transaction.atomic(durable=True)
def merchant_api_token_revoke(*, token: MerchantApiToken, actor: User | None, now: datetime) -> bool:
    """Revoke a token at once. Revoking a revoked token changes nothing and returns False."""
    changed = MerchantApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    if changed:
        audit_record(action=AuditAction.API_TOKEN_REVOKED, subject=token, now=now, actor=actor)
    return bool(changed)


def merchant_api_token_touch(*, token: MerchantApiToken, now: datetime) -> None:
    """Note the token's use, at most once a minute (no write on every request)."""
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        MerchantApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
