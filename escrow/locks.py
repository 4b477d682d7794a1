"""Row locks for money, in one place so every path takes them in the same order: payment, then order,
then ledger accounts (those all at once, in primary-key order).

The payment webhook takes its payment and order in ONE statement (`FOR UPDATE OF` both, payment
first: `payment_order_locked_sql`, which `services._webhook_event_record_locking` extends with the
event's insert).
"""

import functools
from collections.abc import Iterable, Sequence

from core.sql import instance_from_row
from escrow.models import LedgerAccount, Order, Payment
from shop.models import Merchant


def payment_lock(pk: int) -> Payment:
    return Payment.objects.select_for_update(of=("self",)).get(pk=pk)


def order_lock(pk: int) -> Order:
    return Order.objects.select_for_update(of=("self",)).select_related("product", "merchant").get(pk=pk)


# The payment, its order and the order's merchant, joined; their columns aliased c0, c1, … in that order
# (a CTE may not name two columns "id" that a caller refers to).
_LOCKED_MODELS = (Payment, Order, Merchant)


@functools.cache
def _locked_columns() -> tuple[str, tuple[tuple[str, ...], ...]]:
    """(the select list, per model the attribute names of its columns in that order)."""
    select, attnames = [], []
    for model in _LOCKED_MODELS:
        table = model._meta.db_table
        names = []
        for field in model._meta.concrete_fields:
            select.append(f'"{table}"."{field.column}" AS c{len(select)}')
            names.append(field.attname)
        attnames.append(tuple(names))
    return ", ".join(select), tuple(attnames)


def payment_order_locked_sql(where: str) -> str:
    """`SELECT` the payment (`where`, on escrow_payment), its order and their merchant `FOR UPDATE OF`
    the payment and the order: both locks in one statement, payment first as everywhere."""
    select, _attnames = _locked_columns()
    # Only this module's column names and the caller's fixed condition are formatted in.
    return (
        f"SELECT {select} FROM escrow_payment "  # noqa: S608
        "JOIN escrow_order ON escrow_order.id = escrow_payment.order_id "
        "JOIN shop_merchant ON shop_merchant.id = escrow_order.merchant_id "
        # The first by pk, as `.first()` would (a provider's reference is not unique by constraint).
        f"WHERE {where} ORDER BY escrow_payment.id LIMIT 1 FOR UPDATE OF escrow_payment, escrow_order"
    )


def payment_order_locked_column(model: type, attname: str) -> str:
    """The alias (`cN`) of `model`'s column `attname` in `payment_order_locked_sql`'s select list, for a
    caller's statement that refers to it."""
    _select, attnames = _locked_columns()
    start = 0
    for locked, names in zip(_LOCKED_MODELS, attnames, strict=True):
        if locked is model:
            return f"c{start + names.index(attname)}"
        start += len(names)
    raise LookupError(f"{model.__name__} is not locked by payment_order_locked_sql")


def payment_order_from_row(row: Sequence) -> Payment:
    """The payment of a `payment_order_locked_sql` row, its order (with the merchant) set on it."""
    _select, attnames = _locked_columns()
    instances, start = [], 0
    for model, names in zip(_LOCKED_MODELS, attnames, strict=True):
        instances.append(instance_from_row(model, names, row[start : start + len(names)]))
        start += len(names)
    payment, order, merchant = instances
    order.merchant = merchant
    payment.order = order
    return payment


def ledger_accounts_lock(pks: Iterable[int]) -> dict[int, LedgerAccount]:
    """Lock ledger account rows, all in one statement, in primary-key order; returns them by pk.

    Every path that touches two or more balances takes them here, all at once, before (or as) it
    changes any: taken one by one in the order a path happens to need them, a withdrawal request and
    a staff approval (or a payment and a refund) each held one row the other waited for, and
    PostgreSQL aborted one of them as a deadlock. Taking a row that is already held changes nothing.
    """
    query = LedgerAccount.objects.select_for_update().filter(pk__in=set(pks)).order_by("pk")
    return {account.pk: account for account in query}


def withdrawal_lock(pk: int):
    from escrow.models import Withdrawal

    return Withdrawal.objects.select_for_update(of=("self",)).get(pk=pk)


def refund_lock(pk: int):
    from escrow.models import Refund

    return Refund.objects.select_for_update(of=("self",)).get(pk=pk)


def checkout_identities_lock_sql(keys: list[str]) -> tuple[str, list[str]]:
    """The locks of `checkout_identities_lock` as select-list expressions and their parameters, for a
    checkout that takes them in a statement it sends anyway (PostgreSQL). One per key, in sorted
    order: a select list is evaluated left to right."""
    keys = sorted(set(keys))
    return ", ".join(["pg_advisory_xact_lock(hashtextextended(%s, 0))"] * len(keys)), [f"checkout:{k}" for k in keys]


def checkout_identities_lock(keys: list[str]) -> None:
    """Serialise checkouts by the same buyer identities (e-mail, IP) until commit, so two at once cannot
    both pass the reservation caps. Taken in sorted order; PostgreSQL only (SQLite writes one at a time)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    # One statement for all of them.
    locks, params = checkout_identities_lock_sql(keys)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {locks}", params)
