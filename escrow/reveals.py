"""A reveal of an order's keys: recorded and read in one statement, under the order's row lock.

The buyer's poll for the keys (`GET /api/v1/orders/{id}/keys/`, the order page) is the last step of
every purchase, so on PostgreSQL the lock, the evidence row and the keys are one round trip in
autocommit (one statement is its own transaction). The order's row lock is held until that statement
commits, so a refund deciding under the same lock whether the keys were ever seen is never overtaken
(`services.order_keys_reveal`): either the refund sees this reveal, or this statement waits for the
refund and then finds the order no longer holding keys (PostgreSQL re-reads a row it had to wait for),
records nothing and returns nothing. Elsewhere (SQLite, the demo) the same steps run as ORM statements
in one transaction.
"""

from datetime import datetime
from types import SimpleNamespace

from django.db import connection, transaction

from core import prepared
from escrow.locks import order_lock
from escrow.models import ORDER_STATUSES_WITH_KEYS, KeyReveal, Order
from shop.models import CardKey, CardKeyStatus, Merchant
from shop.selectors import card_keys_open, order_keys_plaintext

# Table names from the models, never from a request. `target` locks the order and says whether it holds
# keys *after* any wait for the lock; the reveal row is inserted only then; the keys are joined to the
# inserted row, so no row comes back when nothing was recorded, and one row of NULLs when the order
# holds no sold key. Every value is a parameter.
_REVEAL_SQL = f"""
    WITH target AS MATERIALIZED (
        SELECT id, status = ANY(%(with_keys)s) AS with_keys FROM {Order._meta.db_table}
        WHERE id = %(order)s FOR UPDATE
    ),
    revealed AS (
        INSERT INTO {KeyReveal._meta.db_table} (order_id, at, user_id, ip, user_agent, device, channel)
        SELECT id, %(at)s, %(user)s, %(ip)s::inet, %(user_agent)s, %(device)s, %(channel)s FROM target WHERE with_keys
        RETURNING order_id
    )
    SELECT merchant.id, merchant.data_key_version, merchant.data_key_wrapped,
           card_key.product_id, card_key.fingerprint, card_key.sealed
    FROM revealed
    LEFT JOIN {CardKey._meta.db_table} AS card_key
        ON card_key.order_id = revealed.order_id AND card_key.status = %(sold)s
    LEFT JOIN {Merchant._meta.db_table} AS merchant ON merchant.id = card_key.merchant_id
    ORDER BY card_key.id
"""  # noqa: S608


def order_keys_reveal_record(
    *,
    order_pk: int,
    at: datetime,
    channel: str,
    ip: str | None,
    user_agent: str,
    device: str,
    user_pk: int | None,
) -> list[str] | None:
    """Record one reveal of the order's keys and return them opened, in key order; None (and nothing
    recorded) if, under its lock, the order holds no keys. The caller checks ownership and limits."""
    if connection.vendor != "postgresql":
        return _order_keys_reveal_record_orm(
            order_pk=order_pk, at=at, channel=channel, ip=ip, user_agent=user_agent, device=device, user_pk=user_pk
        )
    params = {
        "order": order_pk,
        "with_keys": sorted(ORDER_STATUSES_WITH_KEYS),
        "at": at,
        "user": user_pk,
        "ip": ip,
        "user_agent": user_agent,
        "device": device,
        "channel": channel,
        "sold": CardKeyStatus.SOLD.value,
    }
    with connection.cursor() as cursor:
        prepared.execute(cursor, _REVEAL_SQL, params)
        rows = cursor.fetchall()
    if not rows:
        return None
    if rows[0][0] is None:  # recorded, but no key of the order is sold (cannot happen while it holds keys)
        return []
    merchant = SimpleNamespace(pk=rows[0][0], data_key_version=rows[0][1], data_key_wrapped=bytes(rows[0][2]))
    return card_keys_open(merchant=merchant, keys=[row[3:] for row in rows])


@transaction.atomic
def _order_keys_reveal_record_orm(
    *, order_pk: int, at: datetime, channel: str, ip: str | None, user_agent: str, device: str, user_pk: int | None
) -> list[str] | None:
    if not order_lock(order_pk).has_keys:
        return None
    KeyReveal.objects.create(
        order_id=order_pk, at=at, channel=channel, ip=ip, user_agent=user_agent, device=device, user_id=user_pk
    )
    return order_keys_plaintext(order_pk=order_pk)
