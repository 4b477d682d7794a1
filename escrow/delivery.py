"""Getting every paid order delivered, whatever happens to the broker or the worker.

The order row is the durable delivery job: an order in status `paid` is waiting for its keys. The
Celery task queued when the payment commits is only the fast path; if it is lost (the broker down at
enqueue time, Redis restarted without persistence, a worker killed holding it, a database connection
cut mid-task), the beat's sweeper finds the order still `paid` a few seconds later and delivers it.
Delivery is idempotent (`services.order_deliver` only delivers a `paid` order, under its row lock),
so a sweep racing the task, or a task run twice, delivers once.
"""

import logging
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection
from django.db.models import QuerySet

from core import prepared
from core.cache import redis_client
from core.sql import sql_literal
from escrow.locks import order_lock
from escrow.models import ORDER_TRANSITIONS, Order, OrderStatus
from shop.models import AVAILABLE_KEY_ORDER_SQL, CardKey, CardKeyStatus, Merchant, Product

logger = logging.getLogger(__name__)

# An order still paid-but-undelivered after this long is a fault someone must look at (verify_orders).
UNDELIVERED_ALARM_AFTER = timedelta(minutes=1)


def order_delivery_enqueue(*, order_pk: int) -> None:
    """Queue the order's delivery; never raises. Meant for `transaction.on_commit`.

    The payment is already committed when this runs, so a broker that is down must not turn the
    webhook's answer into an error (the provider would retry, get "duplicate", and nobody would queue
    the delivery again): the failure is logged and the sweeper delivers the order instead.
    """
    from escrow.tasks import order_deliver_task

    try:
        # The message's kwargsrepr (what `celery inspect` and the logs show) written out: Celery's own, a
        # pure-Python saferepr of the arguments, is a tenth of the publish's CPU (bench/enqueue_cpu.py).
        order_deliver_task.apply_async(
            kwargs={"order_pk": order_pk}, argsrepr="()", kwargsrepr=f"{{'order_pk': {int(order_pk)}}}"
        )
    except Exception:  # any broker or network error: the order row itself is the job, so never lost
        logger.warning("escrow.delivery_enqueue_failed", extra={"order": order_pk}, exc_info=True)


def orders_paid_undelivered(*, paid_before: datetime) -> QuerySet[Order]:
    """Orders paid before `paid_before` and still waiting for their keys, oldest first."""
    return Order.objects.filter(status=OrderStatus.PAID, paid_at__lt=paid_before).order_by("paid_at", "pk")


def orders_deliver_stuck(*, now: datetime, batch: int = 500) -> int:
    """Deliver the orders paid more than ESCROW_DELIVERY_GRACE_SECONDS ago and still undelivered.

    Each order in its own transaction (one bad order does not hold back the rest); returns how many
    this call delivered. Safe beside the queued tasks and beside another sweep: delivery is idempotent.
    """
    from escrow.services import order_deliver

    grace = timedelta(seconds=settings.ESCROW_DELIVERY_GRACE_SECONDS)
    due = list(orders_paid_undelivered(paid_before=now - grace).values_list("pk", flat=True)[:batch])
    delivered = 0
    for pk in due:
        try:
            order = order_deliver(order_pk=pk, now=now)
        except (InterfaceError, OperationalError):
            raise  # the database itself is unreachable: the whole sweep waits for the next beat
        except Exception:  # this order's own problem, logged; the rest still get their keys
            logger.exception("escrow.delivery_sweep_failed", extra={"order": pk})
            continue
        if order.delivered_at == now:  # delivered by this call, not by the task that raced it
            delivered += 1
    if due:
        logger.warning("escrow.delivery_swept", extra={"due": len(due), "delivered": delivered})
    return delivered


def delivery_problems(*, now: datetime) -> list[str]:
    """One line per order paid more than a minute ago and still not delivered (empty when all is well)."""
    stuck = orders_paid_undelivered(paid_before=now - UNDELIVERED_ALARM_AFTER)
    return [
        f"Order {pk} was paid at {paid_at.isoformat()} and is still not delivered."
        for pk, paid_at in stuck.values_list("pk", "paid_at")
    ]


# --- telling a waiting request that the keys are there ------------------------------------------------

# How long an announcement waits for its request (one that arrives later finds the order delivered).
ANNOUNCED_FOR_SECONDS = 60
# A delivery this recent says the workers are delivering: a request for keys may wait for one in flight.
# When none came for this long (the workers stopped, or the shop is quiet), requests answer at once.
DELIVERING_SECONDS = 5


def _announcement_key(order_pk: int) -> str:
    return cache.make_and_validate_key(f"order:{order_pk}:delivered")


def _delivering_key() -> str:
    return cache.make_and_validate_key("deliveries:recent")


def order_delivered_announce(*, order_pk: int) -> None:
    """After a delivery commits: wake the request waiting for this order's keys, if one is
    (`order_delivered_wait`), and note that deliveries are happening (`deliveries_flowing`). With the
    cache on Redis, one round trip; never raises (a waiting request looks at the order again at least
    every 100 ms anyway)."""
    client = redis_client()
    if client is None:
        return
    key = _announcement_key(order_pk)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(key, 1).expire(key, ANNOUNCED_FOR_SECONDS).set(_delivering_key(), 1, ex=DELIVERING_SECONDS)
        pipe.execute()
    except redis.RedisError:
        logger.warning("escrow.delivery_announce_failed", extra={"order": order_pk}, exc_info=True)


def deliveries_flowing() -> bool:
    """Whether a delivery was announced in the last DELIVERING_SECONDS (True where the cache is not
    Redis: nothing announces there). A request waits for a delivery only while they flow, so stopped
    workers hold no web process for long: a few seconds after the last delivery, requests answer at once."""
    client = redis_client()
    if client is None:
        return True
    try:
        return client.exists(_delivering_key()) > 0
    except redis.RedisError:
        return False


def order_delivered_wait(*, order_pk: int, seconds: float) -> bool | None:
    """Block until the delivery of `order_pk` is announced (True) or `seconds` pass (False), holding a
    Redis connection, not the database; None at once when the cache is not Redis or Redis fails (the
    caller then sleeps and looks). One request takes an announcement; the order's status says the rest."""
    client = redis_client()
    if client is None:
        return None
    try:
        return client.blpop([_announcement_key(order_pk)], timeout=seconds) is not None
    except redis.RedisError:
        logger.warning("escrow.delivery_wait_failed", extra={"order": order_pk}, exc_info=True)
        return None


# --- the delivery's own transition ------------------------------------------------------------------

# Only a paid order is delivered here (one held for review is approved back to paid first); the map
# must allow it, or this module is out of step with escrow/models.py.
DELIVERED_FROM = [OrderStatus.PAID.value]
assert all(ORDER_TRANSITIONS.can(source, OrderStatus.DELIVERED) for source in DELIVERED_FROM)

_ORDER_COLUMNS = [field.column for field in Order._meta.concrete_fields]
# What the rest of the delivery needs of the product: the low-stock check's fields, the audit's subject.
_PRODUCT_FIELDS = ["id", "merchant_id", "title", "inspection_hours", "low_stock_threshold", "low_stock_notified_at"]
# What it needs of the merchant: whether `order.delivered` has any webhook endpoint to look up
# (escrow.webhook_events; the flag is read as the webhook's payment lock reads it, without a lock).
_MERCHANT_FIELDS = ["id", "has_webhook_endpoints"]

# One statement: the compare-and-set to `delivered` (its row lock is the delivery's exclusivity, as
# `order_lock` was), the inspection window from the product's hours, the merchant's webhook switch,
# and, for the low-stock check, the product's fields and its available keys counted up to its
# threshold (the delivered keys are reserved, not available, so selling them changes no count). Table
# and column names come from the models; every value is a parameter but the available keys' status,
# written out, and the keys taken in the order the partial index of available keys holds them, so that
# the statement's generic plan counts them in that index instead of walking past every key the product
# ever sold (core.sql.sql_literal).
_DELIVER_SQL = f"""
    UPDATE {Order._meta.db_table} AS o
    SET status = %(delivered)s, delivered_at = %(now)s::timestamptz,
        inspection_ends_at = %(now)s::timestamptz + make_interval(hours => p.inspection_hours)
    FROM {Product._meta.db_table} AS p, {Merchant._meta.db_table} AS m
    WHERE o.id = %(order)s AND o.status = ANY(%(sources)s) AND p.id = o.product_id AND m.id = o.merchant_id
    RETURNING {", ".join(f"o.{column}" for column in _ORDER_COLUMNS)},
        {", ".join(f"p.{column}" for column in _PRODUCT_FIELDS)},
        {", ".join(f"m.{column}" for column in _MERCHANT_FIELDS)},
        (SELECT count(*) FROM (
            SELECT 1 FROM {CardKey._meta.db_table}
            WHERE product_id = p.id AND status = {sql_literal(CardKeyStatus.AVAILABLE)}
            ORDER BY {AVAILABLE_KEY_ORDER_SQL} LIMIT p.low_stock_threshold
        ) AS available)
"""  # noqa: S608


def order_delivered_mark(*, order_pk: int, now: datetime) -> tuple[Order, Product, int | None] | None:
    """Move a paid order to `delivered` (delivered now, inspection window from its product), inside the
    caller's transaction; None if it is not paid (delivered already, refunded, …), changing nothing.

    Returns the order as it now is (with its merchant: on PostgreSQL only the fields the delivery
    uses, the rest read if asked), its product (likewise), and the product's available keys counted up
    to its low-stock threshold (None where that was not counted here)."""
    if connection.vendor != "postgresql":
        order = order_lock(order_pk)
        if order.status not in DELIVERED_FROM:
            return None
        delivered = {"delivered_at": now, "inspection_ends_at": now + timedelta(hours=order.product.inspection_hours)}
        ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.DELIVERED, mirror=order, **delivered)
        return order, order.product, None
    params = {
        "order": order_pk,
        "now": now,
        "delivered": OrderStatus.DELIVERED.value,
        "sources": DELIVERED_FROM,
    }
    with connection.cursor() as cursor:
        prepared.execute(cursor, _DELIVER_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    size = len(_ORDER_COLUMNS)
    order = Order.from_db(connection.alias, [field.attname for field in Order._meta.concrete_fields], row[:size])
    end = size + len(_PRODUCT_FIELDS)
    product = Product.from_db(connection.alias, _PRODUCT_FIELDS, row[size:end])
    order.product = product
    order.merchant = Merchant.from_db(connection.alias, _MERCHANT_FIELDS, row[end : end + len(_MERCHANT_FIELDS)])
    return order, product, row[-1]
