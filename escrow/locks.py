"""Row locks for money, in one place so every path takes them in the same order (payment, then order)."""

from escrow.models import Order, Payment


def payment_lock(pk: int) -> Payment:
    return Payment.objects.select_for_update(of=("self",)).get(pk=pk)


def order_lock(pk: int) -> Order:
    return Order.objects.select_for_update(of=("self",)).select_related("product", "merchant").get(pk=pk)
