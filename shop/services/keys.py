"""Card keys on their way to a buyer, each step run by escrow inside its own transaction: reserve,
release, sell, restock or revoke on a refund, replace in a dispute.

Keys are claimed in key order with `SELECT … FOR UPDATE SKIP LOCKED`, so no key is sold twice and
concurrent checkouts neither wait on each other nor deadlock; every status moves through
`CARD_KEY_TRANSITIONS`.
"""

from django.db import transaction

from core import prepared
from core.sql import sql_literal
from shop.models import (
    AVAILABLE_KEY_ORDER_SQL,
    CARD_KEY_TRANSITIONS,
    CardKey,
    CardKeyStatus,
    Product,
    available_key_order,
)


class OutOfStock(Exception):
    """Fewer available keys than asked for; nothing was reserved."""

    def __init__(self, product_pk: int, wanted: int, found: int):
        super().__init__(f"Product {product_pk}: {wanted} wanted, {found} available.")
        self.wanted = wanted
        self.found = found


def keys_reserve(*, product: Product, quantity: int, order_pk: int) -> list[int]:
    """Reserve `quantity` available keys of `product` for an order, or raise `OutOfStock`.

    Must run inside the caller's transaction. Keys are taken in primary-key order with
    `FOR UPDATE SKIP LOCKED`, so concurrent checkouts neither wait on each other's rows nor deadlock,
    and no key is ever reserved twice.
    """
    assert transaction.get_connection().in_atomic_block, "keys_reserve needs the caller's transaction"
    pks = list(
        CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE)
        .order_by(available_key_order())
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


def keys_reserve_sql(*, name: str, product_pk: int, quantity: int, order_pk: int) -> tuple[str, list]:
    """`keys_reserve` as members of a caller's `WITH` list (PostgreSQL), for a checkout that writes
    its order and reserves its keys in ONE statement (escrow/checkout_sql.py): `<name>` is the UPDATE
    `RETURNING` the pks of the keys it reserved. The caller counts them and rolls its transaction back
    (OutOfStock) when fewer than `quantity` came back.

    The same claim as `keys_reserve`: available keys in key order, `FOR UPDATE SKIP LOCKED`, picked
    in a MATERIALIZED member so that they are picked (and locked) exactly once, then moved by the
    transitions map."""
    sources = CARD_KEY_TRANSITIONS.sources(CardKeyStatus.RESERVED)
    assert CardKeyStatus.AVAILABLE in sources, "the transitions map no longer reserves available keys"
    table = CardKey._meta.db_table
    available = sql_literal(CardKeyStatus.AVAILABLE)
    # This runs as a prepared statement (core/prepared.py), and PostgreSQL keeps one generic plan for
    # it, made without the parameters' values, only when that plan's estimate is no dearer than
    # planning afresh each time. So what the plan depends on is written out: the status (a generic
    # plan can use the partial index of available keys only if the statement states its condition),
    # the order only that index gives (AVAILABLE_KEY_ORDER_SQL), and a limit of 1, the checkout of one
    # key. A limit passed as a parameter is estimated at a tenth of the product's keys; the whole
    # checkout's generic plan then looked dearer than a fresh one and was never kept, and every
    # one-key checkout paid for planning its statement (issue 12).
    limit = "1" if quantity == 1 else "%s"
    sql = (
        f"{name}_picked AS MATERIALIZED (SELECT id FROM {table} "  # noqa: S608 - names, no input
        f"WHERE product_id = %s AND status = {available} "
        f"ORDER BY {AVAILABLE_KEY_ORDER_SQL} LIMIT {limit} FOR UPDATE SKIP LOCKED), "
        f"{name} AS (UPDATE {table} SET status = %s, order_id = %s "
        f"WHERE id IN (SELECT id FROM {name}_picked) AND status = {available} RETURNING id)"
    )
    return sql, [
        product_pk,
        *([] if quantity == 1 else [quantity]),
        CardKeyStatus.RESERVED,
        order_pk,
    ]


def keys_release(*, order_pk: int) -> int:
    """Return an unpaid order's reserved keys to stock. Idempotent."""
    assert transaction.get_connection().in_atomic_block, "keys_release needs the caller's transaction"
    return CARD_KEY_TRANSITIONS.update(
        queryset=CardKey.objects.filter(order_id=order_pk),
        to=CardKeyStatus.AVAILABLE,
        from_=[CardKeyStatus.RESERVED],
        order=None,
    )


# Every delivery runs this; on PostgreSQL as plain SQL, because the ORM's compile of the UPDATE cost the
# worker four times the CPU of sending it (issue 9). The states it moves from are the transitions map's.
_KEYS_SELL_SQL = f"UPDATE {CardKey._meta.db_table} SET status = %s WHERE order_id = %s AND status = ANY(%s)"  # noqa: S608


def keys_sell(*, order_pk: int) -> int:
    """Mark an order's reserved keys sold. Idempotent: already-sold keys stay as they are."""
    connection = transaction.get_connection()
    assert connection.in_atomic_block, "keys_sell needs the caller's transaction"
    if connection.vendor != "postgresql":
        return CARD_KEY_TRANSITIONS.update(queryset=CardKey.objects.filter(order_id=order_pk), to=CardKeyStatus.SOLD)
    sources = CARD_KEY_TRANSITIONS.sources(CardKeyStatus.SOLD)
    with connection.cursor() as cursor:
        prepared.execute(cursor, _KEYS_SELL_SQL, [CardKeyStatus.SOLD.value, order_pk, sources])
        return cursor.rowcount


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
