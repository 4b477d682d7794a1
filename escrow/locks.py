"""Row locks for money, in one place so every path takes them in the same order: payment, then order,
then ledger accounts (those all at once, in primary-key order)."""

from collections.abc import Iterable

from escrow.models import LedgerAccount, Order, Payment


def payment_lock(pk: int) -> Payment:
    return Payment.objects.select_for_update(of=("self",)).get(pk=pk)


def order_lock(pk: int) -> Order:
    return Order.objects.select_for_update(of=("self",)).select_related("product", "merchant").get(pk=pk)


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
