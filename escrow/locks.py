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
