"""Orders held for review: a payment whose amount or currency did not match the order sits in the
suspense account with the order's keys still reserved, until staff approve or reject it.

Approve: only when what arrived covers the order (same currency, at least the amount). The order's
amount moves suspense → escrow with the usual holds, the order is paid and delivered as any other,
and a surplus goes back to the buyer as a refund. An underpayment or another currency cannot be
approved (the buyer would get goods they did not pay for, or the ledger would mix currencies): staff
reject it instead.

Reject: everything that arrived goes back to the buyer through the gateway (suspense →
buyer_refunds_payable, then the usual refund flow), and the reserved keys, never delivered, return to
stock.
"""

import logging
from datetime import datetime

from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import audit_record
from core.errors import Refused
from escrow import ledger, refunds, webhook_events
from escrow.locks import order_lock, payment_lock
from escrow.models import (
    ORDER_TRANSITIONS,
    PAYMENT_TRANSITIONS,
    AccountKind,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
)
from escrow.services import _holds as order_holds  # the same holds a matching payment books
from shop import services as shop_services
from shop.models import CardKey, CardKeyStatus, WebhookEventType

logger = logging.getLogger(__name__)


class ReviewRefused(Refused):
    """A review decision that cannot go ahead; nothing changed. The message is for people."""


def _held_for_review(order_pk: int) -> tuple[Payment, Order]:
    """The held order and its mismatched payment, both locked (payment, then order: the one order)."""
    payment = Payment.objects.filter(order_id=order_pk, status=PaymentStatus.MISMATCHED).order_by("pk").first()
    if payment is not None:
        payment = payment_lock(payment.pk)
    order = order_lock(order_pk)
    if payment is None or payment.status != PaymentStatus.MISMATCHED or order.status != OrderStatus.HELD_FOR_REVIEW:
        raise ReviewRefused(_("This order is not held for review."), code="not_held")
    return payment, order


def _keys_reserved(order: Order) -> None:
    """The order's keys, reserved again if its reservation had lapsed before the payment came in."""
    missing = order.quantity - CardKey.objects.filter(order=order, status=CardKeyStatus.RESERVED).count()
    if missing <= 0:
        return
    try:
        with transaction.atomic():
            shop_services.keys_reserve(product=order.product, quantity=missing, order_pk=order.pk)
    except shop_services.OutOfStock:
        raise ReviewRefused(
            _("Not enough stock is left to deliver this order. Reject it to refund the buyer."), code="out_of_stock"
        ) from None


@transaction.atomic(durable=True)
def order_review_approve(*, order_pk: int, staff: User, now: datetime) -> Order:
    """Staff approve a held order: it is paid from suspense and delivered (on commit), exactly once.

    Refused (`ReviewRefused`, nothing changed) unless the order is held, the received currency is the
    order's and the received amount covers it (codes "not_held", "wrong_currency", "underpaid"), or
    when its keys cannot be reserved any more ("out_of_stock"). A surplus is refunded to the buyer.
    """
    payment, order = _held_for_review(order_pk)
    if payment.received_currency != order.currency:
        raise ReviewRefused(
            _("The buyer paid in %(paid)s, not %(order)s: reject the order to refund them.")
            % {"paid": payment.received_currency, "order": order.currency},
            code="wrong_currency",
        )
    if payment.received_amount < order.amount:
        raise ReviewRefused(
            _("The buyer paid less than the order's amount: reject the order to refund what they paid."),
            code="underpaid",
        )
    _keys_reserved(order)
    PAYMENT_TRANSITIONS.apply(model=Payment, pk=payment.pk, to=PaymentStatus.SUCCEEDED)
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.PAID)
    # Held at payment (amount or currency off), so this is the first time it counts as paid.
    webhook_events.order_event_emit(
        order=order, event_type=WebhookEventType.ORDER_PAID, status=OrderStatus.PAID, now=now
    )
    suspense, escrow, available, fees = ledger.accounts(
        (AccountKind.SUSPENSE, order.currency, None),
        (AccountKind.ESCROW, order.currency, None),
        (AccountKind.MERCHANT_AVAILABLE, order.currency, order.merchant_id),
        (AccountKind.PLATFORM_FEES, order.currency, None),
    )
    paid_in = ledger.Move(
        transfer_id=f"payment:{payment.pk}:approved", debit=suspense, credit=escrow, amount=order.amount, code="payment"
    )
    surplus = payment.received_amount - order.amount
    with ledger.balances_deferred():
        ledger.transfers(
            moves=[paid_in, *order_holds(order=order, escrow=escrow, available=available, fees=fees)],
            order=order,
            now=now,
        )
        if surplus:
            refunds.received_refund_book(
                order=order, payment=payment, amount=surplus, reason="overpayment", actor=staff, note="", now=now
            )
    audit_record(
        action=AuditAction.ORDER_REVIEW_APPROVED,
        subject=order,
        now=now,
        actor=staff,
        data={"payment": payment.pk, "received": payment.received_amount, "surplus_refunded": surplus},
    )
    from escrow.tasks import order_deliver_task

    transaction.on_commit(lambda: order_deliver_task.delay(order_pk=order.pk))
    logger.info("escrow.order_review_approved", extra={"order": order.pk})
    order.refresh_from_db()
    return order


@transaction.atomic(durable=True)
def order_review_reject(*, order_pk: int, staff: User, now: datetime, note: str = "") -> Refund:
    """Staff reject a held order: all that arrived is refunded through the gateway, the reserved keys
    return to stock and the order is refunded, exactly once ("not_held" for anything else)."""
    payment, order = _held_for_review(order_pk)
    with ledger.balances_deferred():
        refund = refunds.received_refund_book(
            order=order,
            payment=payment,
            amount=payment.received_amount,
            reason="review_rejected",
            actor=staff,
            note=note,
            now=now,
        )
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.REFUNDED, completed_at=now)
    webhook_events.order_event_emit(
        order=order, event_type=WebhookEventType.ORDER_REFUNDED, status=OrderStatus.REFUNDED, now=now, refund=refund
    )
    released = shop_services.keys_release(order_pk=order.pk)  # reserved, never delivered: nobody saw them
    audit_record(
        action=AuditAction.ORDER_REVIEW_REJECTED,
        subject=order,
        now=now,
        actor=staff,
        data={
            "refund": refund.pk,
            "amount": refund.amount,
            "currency": refund.currency,
            "keys": released,
            "note": note,
        },
    )
    logger.info("escrow.order_review_rejected", extra={"order": order.pk, "refund": refund.pk})
    return refund


# --- orders held by the risk engine (the money is in escrow, the keys reserved, nothing delivered) ---


def _held_by_risk(order_pk: int) -> tuple[Payment, Order] | None:
    """The locked succeeded payment and order of an order the risk engine held; None if it moved on."""
    payment = Payment.objects.filter(order_id=order_pk, status=PaymentStatus.SUCCEEDED).order_by("pk").first()
    if payment is None:
        return None
    payment = payment_lock(payment.pk)
    order = order_lock(order_pk)
    return (payment, order) if order.status == OrderStatus.HELD_FOR_REVIEW else None


@transaction.atomic(durable=True)
def order_risk_release(*, order_pk: int, staff: User, now: datetime, note: str = "") -> Order:
    """Staff clear an order the risk engine held after payment: it is paid again and delivered on
    commit, exactly once. An order already past the hold is returned as it is (a retry)."""
    held = _held_by_risk(order_pk)
    if held is None:
        order = Order.objects.get(pk=order_pk)
        if order.status in {OrderStatus.HELD_FOR_REVIEW, OrderStatus.REFUNDED}:
            raise ReviewRefused(_("This order is not held by the risk engine."), code="not_held")
        return order
    _payment, order = held
    _keys_reserved(order)
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.PAID)
    audit_record(
        action=AuditAction.ORDER_REVIEW_APPROVED, subject=order, now=now, actor=staff, data={"by": "risk", "note": note}
    )
    from escrow.tasks import order_deliver_task

    transaction.on_commit(lambda: order_deliver_task.delay(order_pk=order.pk))
    order.refresh_from_db()
    return order


@transaction.atomic(durable=True)
def order_risk_refund(*, order_pk: int, staff: User, now: datetime, note: str = "") -> Order:
    """Staff reject an order the risk engine held: refunded in full through the gateway, its reserved
    keys (never delivered) back in stock, exactly once; a refunded order is returned as it is."""
    held = _held_by_risk(order_pk)
    if held is None:
        order = Order.objects.get(pk=order_pk)
        if order.status != OrderStatus.REFUNDED:
            raise ReviewRefused(_("This order is not held by the risk engine."), code="not_held")
        return order
    payment, order = held
    # Back to paid (it never left it in substance: paid, not delivered), then the ordinary full refund.
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.PAID, mirror=order)
    with ledger.balances_deferred():
        refunds.order_refund_book(
            order=order,
            payment=payment,
            now=now,
            key_pks=None,
            disposition="restock",
            reason="risk_rejected",
            actor=staff,
            note=note,
        )
    audit_record(
        action=AuditAction.ORDER_REVIEW_REJECTED, subject=order, now=now, actor=staff, data={"by": "risk", "note": note}
    )
    order.refresh_from_db()
    return order


def order_review_item_approve(*, item, staff: User, note: str, now: datetime) -> None:
    """The review queue's approve for an order: a mismatched payment goes through `order_review_approve`
    (which may refuse: underpaid, other currency), a risk hold through `order_risk_release`."""
    order_pk = int(item.subject_id)
    if Payment.objects.filter(order_id=order_pk, status=PaymentStatus.MISMATCHED).exists():
        order_review_approve(order_pk=order_pk, staff=staff, now=now)
    else:
        order_risk_release(order_pk=order_pk, staff=staff, now=now, note=note)


def order_review_item_reject(*, item, staff: User, note: str, now: datetime) -> None:
    order_pk = int(item.subject_id)
    if Order.objects.filter(pk=order_pk, status=OrderStatus.REFUNDED).exists():
        return  # a retry after the refund was booked
    if Payment.objects.filter(order_id=order_pk, status=PaymentStatus.MISMATCHED).exists():
        order_review_reject(order_pk=order_pk, staff=staff, now=now, note=note)
    else:
        order_risk_refund(order_pk=order_pk, staff=staff, now=now, note=note)
