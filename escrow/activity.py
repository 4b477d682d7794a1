"""The escrow rows of a person's "Download my activity" file (accounts.hooks.ACTIVITY_SECTIONS):
their orders, every reveal of their orders' keys, and — for a merchant's owner — their withdrawals.
Each query is scoped to the person asking."""

from collections.abc import Iterator

from accounts.hooks import ActivityRow
from core.money import to_major
from escrow.models import KeyReveal, Order, Withdrawal


def orders_rows(user) -> Iterator[ActivityRow]:
    for order in Order.objects.filter(buyer=user).select_related("product").order_by("created_at", "pk"):
        yield ActivityRow(
            at=order.created_at,
            section="order",
            reference=f"order {order.pk}",
            what=order.status,
            details=f"{order.quantity} x {order.product.title} = {to_major(order.amount, order.currency)} "
            f"{order.currency}; paid {order.paid_at or '-'}; delivered {order.delivered_at or '-'}",
            ip=order.checkout_ip or "",
        )


def key_reveals_rows(user) -> Iterator[ActivityRow]:
    reveals = KeyReveal.objects.filter(order__buyer=user).order_by("at", "pk")
    for reveal in reveals:
        yield ActivityRow(
            at=reveal.at,
            section="key_reveal",
            reference=f"order {reveal.order_id}",
            what=reveal.channel,
            details=reveal.user_agent,
            ip=reveal.ip or "",
            device=reveal.device,
        )


def withdrawals_rows(user) -> Iterator[ActivityRow]:
    for withdrawal in Withdrawal.objects.filter(merchant__user=user).order_by("requested_at", "pk"):
        yield ActivityRow(
            at=withdrawal.requested_at,
            section="withdrawal",
            reference=f"withdrawal {withdrawal.pk}",
            what=withdrawal.status,
            details=f"{to_major(withdrawal.amount, withdrawal.currency)} {withdrawal.currency}; "
            f"decided {withdrawal.decided_at or '-'}",
        )
