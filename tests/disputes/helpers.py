"""What the dispute tests share: delivered orders built through the real services, and a snapshot of
everything a refused call must leave as it was."""

from contextlib import nullcontext

from django.core import mail
from django.utils import timezone

from accounts.models import AuditEntry
from disputes import services
from disputes.models import Dispute, DisputeMessage
from escrow.models import DisputeAction, LedgerAccount, Order, OrderStatus, Refund, Transfer
from shop.models import CardKey
from tests import factories


def delivered(run_on_commit=None, *, quantity=1, price=10000, stock=5, buyer=None) -> Order:
    product = factories.product_create(stock=stock, price=price)
    with run_on_commit() if run_on_commit else nullcontext():
        placed = factories.order_place(product=product, quantity=quantity, buyer=buyer)
        response = factories.pay(placed.order)
        assert response.status_code == 200, response.content
    order = placed.order
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    order.access_token = placed.access_token
    return order


def opened(run_on_commit=None, *, now=None, key_pks=None, **kwargs) -> Dispute:
    order = delivered(run_on_commit, **kwargs)
    with run_on_commit() if run_on_commit else nullcontext():
        dispute = services.dispute_open(
            order_pk=order.pk,
            reason="key_invalid",
            statement="The key says it is invalid.",
            key_pks=key_pks,
            now=now or timezone.now(),
        )
    dispute.order.access_token = order.access_token
    return dispute


def everything() -> tuple:
    """All that a refused call must leave as it was."""
    return (
        list(Dispute.objects.order_by("pk").values_list()),
        list(DisputeMessage.objects.order_by("pk").values_list("pk")),
        list(Order.objects.order_by("pk").values_list("pk", "status", "completed_at")),
        list(CardKey.objects.order_by("pk").values_list("pk", "status", "order_id")),
        list(LedgerAccount.objects.order_by("pk").values_list("pk", "debits_posted", "credits_posted")),
        list(LedgerAccount.objects.order_by("pk").values_list("pk", "debits_pending", "credits_pending")),
        Transfer.objects.count(),
        Refund.objects.count(),
        DisputeAction.objects.count(),
        AuditEntry.objects.count(),
        len(mail.outbox),
    )
