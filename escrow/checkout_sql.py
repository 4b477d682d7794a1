"""The checkout's reads and writes (`escrow.services._order_place`), on PostgreSQL in TWO statements,
the risk engine's read and write included (issue 9: compiling the ORM's seven statements cost more CPU
than PostgreSQL spent running them; issue 12: the risk engine's own two round trips cost a fifth of the
checkout's throughput):

1. `checkout_product_read`: the product with its merchant, and in the same SELECT the buyer's
   per-identity advisory locks (`escrow.locks`), the order's id drawn from its sequence, and the risk
   engine's read as one text[] value (`risk.AssessmentStarted.read_sql`: its velocity windows, the
   actor's history and seen identities, a freeze; the act is decided on it once the product is read);
2. `order_write`: ONE data-modifying CTE — the keys each identity holds in unpaid orders (the
   reservation caps, read AFTER statement 1 took the locks, so in a snapshot that sees every
   checkout that held them before), INSERT the order, reserve its keys (`shop`'s claim: key order,
   `FOR UPDATE SKIP LOCKED`), INSERT the payment, INSERT the audit line `order.placed`, and INSERT the
   risk engine's decision naming the order, with the act's velocity hits and seen identities
   (`risk.Assessment.store_sql`).

The caller refuses (and its transaction rolls back, undoing all of it) when a cap is crossed or
fewer keys than asked were reserved. Elsewhere (SQLite, the demo) the same steps through the ORM, the
risk engine reading and writing on its own. Each table's SQL comes from its own app: the product read
from `shop.selectors`, the claim from `shop.services`, the audit line from `accounts.services`, the
risk read and decision from `risk`, the rows from their models (`core.sql`); escrow asks, none of
them imports escrow.
"""

from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import Q, Sum

from accounts.services import audit_record, audit_record_sql
from core import prepared
from core.sql import insert_sql, on_postgresql, sql_literal
from escrow.locks import checkout_identities_lock, checkout_identities_lock_sql
from escrow.models import Order, OrderStatus, Payment
from shop import selectors as shop_selectors
from shop import services as shop_services
from shop.models import Product


def checkout_identities(*, email: str, ip: str | None) -> dict[str, str]:
    """The identities whose unpaid keys are capped, by kind: the e-mail (as typed; compared without
    case) and the checkout's address."""
    return {"email": email.strip()} | ({"ip": ip} if ip else {})


def _lock_keys(identities: dict[str, str]) -> list[str]:
    return [f"{kind}:{value.lower() if kind == 'email' else value}" for kind, value in identities.items()]


def checkout_product_read(
    *,
    product_pk: int,
    identities: dict[str, str],
    risk_read: tuple[str, list] | None = None,
    several_keys: bool = False,
) -> tuple[Product, int | None, Any] | None:
    """The product if it is on sale (with its merchant), the id the order will have (None: the database
    gives it on insert) and the value of `risk_read` (the risk engine's read as one SQL expression and
    its parameters, `risk.AssessmentStarted.read_sql`; None when not given), or None. On PostgreSQL the
    buyer's identity locks are taken by the same statement, held until the checkout's transaction ends.

    `several_keys`: the order takes more than one key, and the same statement also takes the product's
    lock for such orders. Keys are claimed `SKIP LOCKED`, so two multi-key checkouts at once could each
    lock part of the last keys, both come up short, and both answer "out of stock" with the keys still
    there. Holding that lock, one multi-key claim of a product runs at a time; one-key checkouts never
    take it."""
    if not on_postgresql():
        assert risk_read is None, "risk_read is PostgreSQL's"
        read = shop_selectors.product_on_sale_read(pk=product_pk)
        return (read[0], None, None) if read is not None else None
    locks, params = checkout_identities_lock_sql(
        _lock_keys(identities) + ([f"product:{product_pk}"] if several_keys else [])
    )
    also_select = f"nextval(pg_get_serial_sequence(%s, 'id')), {locks}"
    also_params = [Order._meta.db_table, *params]
    if risk_read is not None:
        also_select += f", {risk_read[0]}"
        also_params += risk_read[1]
    read = shop_selectors.product_on_sale_read(pk=product_pk, also_select=also_select, also_params=also_params)
    if read is None:
        return None
    product, (order_pk, *also) = read
    return product, order_pk, also[-1] if risk_read is not None else None


@dataclass(frozen=True)
class OrderWritten:
    held: dict[str, int]  # keys each identity held in unpaid orders before this one, by kind
    reserved: int  # keys reserved for this order (fewer than its quantity: out of stock)
    decision_pk: int | None = None  # the risk decision's, when `order_write` wrote it


def order_write(
    *,
    order: Order,
    payment: Payment,
    identities: dict[str, str],
    audit: dict,
    decision: tuple[str, list] | None = None,
) -> OrderWritten:
    """Write the order (its id already drawn on PostgreSQL), reserve its keys, write its payment and
    the audit line (`audit`: `audit_record`'s arguments but the subject), and say what each identity
    held unpaid before. `decision`: the risk engine's decision about the order as members of the
    statement's `WITH` list and their parameters (`risk.Assessment.store_sql(name="decision")`), written
    by the same statement; its id comes back as `decision_pk`. Inside the checkout's transaction; the
    caller checks the caps and the stock."""
    if not on_postgresql():
        assert decision is None, "decision is PostgreSQL's"
        return _order_write_orm(order=order, payment=payment, identities=identities, audit=audit)
    # The sums, as `email__iexact` / `checkout_ip =` would be compiled (the same plans and indexes).
    conditions = {"email": "UPPER(email::text) = UPPER(%s)", "ip": "checkout_ip = %s::inet"}
    held_columns = ", ".join(f"SUM(quantity) FILTER (WHERE {conditions[kind]})" for kind in identities)
    held_where = " OR ".join(conditions[kind] for kind in identities)
    order_insert, order_params = insert_sql(order)
    keys, keys_params = shop_services.keys_reserve_sql(
        name="reserved", product_pk=order.product_id, quantity=order.quantity, order_pk=order.pk
    )
    payment_insert, payment_params = insert_sql(payment, returning_pk=True)
    audit_insert, audit_params = audit_record_sql(subject=order, **audit)
    decision_members, decision_params = decision or ("", [])
    sql = (
        # The status written out: the generic plan then uses the partial indexes of unpaid orders.
        f"WITH held AS (SELECT {held_columns} FROM {Order._meta.db_table} "  # noqa: S608 - names, no input
        f"WHERE status = {sql_literal(OrderStatus.AWAITING_PAYMENT)} AND ({held_where})), "
        f"new_order AS ({order_insert}), "
        f"{keys}, "
        f"new_payment AS ({payment_insert}), "
        f"audit AS ({audit_insert})"
        f"{', ' + decision_members if decision else ''} "
        "SELECT held.*, (SELECT count(*) FROM reserved), (SELECT id FROM new_payment)"
        f"{', (SELECT id FROM decision)' if decision else ''} FROM held"
    )
    values = list(identities.values())
    params = [*values, *values, *order_params, *keys_params]
    params += [*payment_params, *audit_params, *decision_params]
    with connection.cursor() as cursor:
        prepared.execute(cursor, sql, params)
        row = cursor.fetchone()
    decision_pk = row[-1] if decision else None
    *held, reserved, payment.pk = row[:-1] if decision else row
    for instance in (order, payment):
        instance._state.adding = False
        instance._state.db = DEFAULT_DB_ALIAS
    held_by = {kind: value or 0 for kind, value in zip(identities, held, strict=True)}
    return OrderWritten(held=held_by, reserved=reserved, decision_pk=decision_pk)


def _order_write_orm(*, order: Order, payment: Payment, identities: dict[str, str], audit: dict) -> OrderWritten:
    checkout_identities_lock(_lock_keys(identities))
    rows = {"email": Q(email__iexact=identities["email"])}
    if "ip" in identities:
        rows["ip"] = Q(checkout_ip=identities["ip"])
    conditions = Q()
    for condition in rows.values():
        conditions |= condition
    held = Order.objects.filter(conditions, status=OrderStatus.AWAITING_PAYMENT).aggregate(
        **{kind: Sum("quantity", filter=condition) for kind, condition in rows.items()}
    )
    order.save(force_insert=True)
    try:
        reserved = len(shop_services.keys_reserve(product=order.product, quantity=order.quantity, order_pk=order.pk))
    except shop_services.OutOfStock:
        reserved = 0
    payment.order = order
    payment.save(force_insert=True)
    audit_record(subject=order, **audit)
    return OrderWritten(held={kind: value or 0 for kind, value in held.items()}, reserved=reserved)
