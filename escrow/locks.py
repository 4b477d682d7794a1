"""Row locks for money, in one place so every path takes them in the same order (payment, then order)."""

from escrow.models import Order, Payment


def payment_lock(pk: int) -> Payment:
    return Payment.objects.select_for_update(of=("self",)).get(pk=pk)


def order_lock(pk: int) -> Order:
    return Order.objects.select_for_update(of=("self",)).select_related("product", "merchant").get(pk=pk)


def orders_lock(pks: list[int]) -> list[Order]:
    """Lock many orders, in primary-key order."""
    return list(Order.objects.select_for_update(of=("self",)).filter(pk__in=pks).order_by("pk"))


def ledger_account_lock(pk: int):
    """Lock one ledger account row: the withdrawal check reads its balance under this lock."""
    from escrow.models import LedgerAccount

    return LedgerAccount.objects.select_for_update().get(pk=pk)


def withdrawal_lock(pk: int):
    from escrow.models import Withdrawal

    return Withdrawal.objects.select_for_update(of=("self",)).get(pk=pk)


def refund_lock(pk: int):
    from escrow.models import Refund

    return Refund.objects.select_for_update(of=("self",)).get(pk=pk)


def checkout_identities_lock(keys: list[str]) -> None:
    """Serialise checkouts by the same buyer identities (e-mail, IP) until commit, so two at once cannot
    both pass the reservation caps. Taken in sorted order; PostgreSQL only (SQLite writes one at a time)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for key in sorted(set(keys)):
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"checkout:{key}"])
