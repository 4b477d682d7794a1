"""Escrow's events for merchants' webhooks, recorded in the transaction of what happened (the outbox is
shop's: `shop.services.webhook_emit`). Each body holds ids, statuses and amounts as decimal strings with
their currency, never a key. A merchant without an endpoint costs one indexed query per event, or none
when the order's merchant row is loaded already (its `has_webhook_endpoints` then decides)."""

from datetime import datetime

from core.money import to_major
from escrow.models import Order, Refund, Withdrawal
from shop import services as shop_services
from shop.models import WebhookEventType


def order_data(order: Order, *, status: str) -> dict:
    return {
        "order": {
            "id": order.pk,
            "status": str(status),
            "product_id": order.product_id,
            "quantity": order.quantity,
            "amount": to_major(order.amount, order.currency),
            "currency": order.currency,
        }
    }


def order_event_emit(*, order: Order, event_type: str, status: str, now: datetime, refund: Refund | None = None) -> int:
    """`order.paid`, `order.delivered`, `order.completed` or `order.refunded` (with its refund) for one order."""
    data = order_data(order, status=status)
    if refund is not None:
        data["refund"] = {
            "id": refund.pk,
            "amount": to_major(refund.amount, refund.currency),
            "currency": refund.currency,
            "key_count": refund.key_count,
            "full": str(status) == "refunded",
        }
    # The merchant's row, when the caller read it with the order (order_lock, the payment's lock), says
    # whether there is any endpoint to look up.
    known = order.merchant.has_webhook_endpoints if Order.merchant.is_cached(order) else None
    return shop_services.webhook_emit(
        merchant_pk=order.merchant_id, event_type=event_type, data=data, now=now, merchant_has_endpoints=known
    )


def orders_completed_emit(*, orders: list[Order], now: datetime) -> int:
    """`order.completed` for a batch of released orders: one query for all their merchants' endpoints."""
    return shop_services.webhook_emit_many(
        events=[
            shop_services.WebhookEventSpec(
                order.merchant_id, WebhookEventType.ORDER_COMPLETED, order_data(order, status="completed")
            )
            for order in orders
        ],
        now=now,
    )


def withdrawal_paid_emit(*, withdrawal: Withdrawal, now: datetime) -> int:
    data = {
        "withdrawal": {
            "id": withdrawal.pk,
            "status": str(withdrawal.status),
            "amount": to_major(withdrawal.amount, withdrawal.currency),
            "currency": withdrawal.currency,
        }
    }
    return shop_services.webhook_emit(
        merchant_pk=withdrawal.merchant_id, event_type=WebhookEventType.WITHDRAWAL_PAID, data=data, now=now
    )
