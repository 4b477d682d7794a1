"""The refund request to the gateway is made with no transaction open and no row locked."""

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEntry
from escrow import gateways, refunds
from escrow.gateways.sandbox.gateway import SandboxGateway
from escrow.ledger_checks import ledger_problems
from escrow.models import Payment, Refund, RefundStatus
from tests import factories

# The refund must really commit before the gateway is asked, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


class SlowProvider(SandboxGateway):
    """A provider faked at the edge: it notes whether the shop held a transaction while asking it."""

    name = "slowprovider"

    def __init__(self):
        self.calls = []

    def refund_request(self, *, payment_id: str, amount: int, currency: str, idempotency_key: str) -> str:
        self.calls.append({"in_atomic_block": connection.in_atomic_block, "idempotency_key": idempotency_key})
        return "sp_refund_1"


@pytest.fixture
def provider(monkeypatch, settings):
    fake = SlowProvider()
    monkeypatch.setitem(gateways.GATEWAYS, fake.name, fake)
    settings.PAYMENT_GATEWAYS = [*settings.PAYMENT_GATEWAYS, fake.name]
    return fake


def test_gateway_refund_call_holds_no_transaction_and_a_retry_is_the_same_refund(provider):
    order = factories.order_place(product=factories.product_create(stock=2)).order
    assert factories.pay(order, client=Client()).status_code == 200
    Payment.objects.filter(order=order).update(gateway=provider.name)

    # Booking commits, then its on-commit task (eager here) submits to the gateway.
    refund = refunds.order_refund(order_pk=order.pk, now=timezone.now())

    assert provider.calls == [{"in_atomic_block": False, "idempotency_key": f"refund:{refund.pk}"}]
    refund.refresh_from_db()
    assert (refund.status, refund.gateway_refund_id) == (RefundStatus.REQUESTED, "sp_refund_1")
    assert AuditEntry.objects.filter(action="refund.submitted", subject_id=str(refund.pk)).count() == 1

    # A retry (the task redelivered) asks with the same key and records nothing twice.
    refunds.refund_submit(refund_pk=refund.pk, now=timezone.now())
    assert [call["idempotency_key"] for call in provider.calls] == [f"refund:{refund.pk}"] * 2
    assert all(not call["in_atomic_block"] for call in provider.calls)
    assert Refund.objects.get(pk=refund.pk).gateway_refund_id == "sp_refund_1"
    assert AuditEntry.objects.filter(action="refund.submitted", subject_id=str(refund.pk)).count() == 1


def test_a_refund_webhook_sent_before_the_shop_recorded_the_answer_settles_by_reference():
    # The sandbox sends its webhook at once when asked outside a transaction: before refund_submit
    # has stored the refund id. The echoed reference finds the refund; it settles exactly once.
    order = factories.order_place(product=factories.product_create(stock=2)).order
    assert factories.pay(order, client=Client()).status_code == 200

    refund = refunds.order_refund(order_pk=order.pk, now=timezone.now())

    refund.refresh_from_db()
    assert refund.status == RefundStatus.SUCCEEDED and refund.gateway_refund_id.startswith("sbr_")
    assert AuditEntry.objects.filter(action="refund.submitted", subject_id=str(refund.pk)).count() == 1
    assert AuditEntry.objects.filter(action="refund.succeeded", subject_id=str(refund.pk)).count() == 1
    assert ledger_problems() == []


@pytest.mark.django_db
def test_a_refund_event_is_matched_by_its_reference_only_while_the_id_is_unrecorded(
    run_on_commit, django_capture_on_commit_callbacks
):
    from django.db import transaction

    from escrow.gateways import GatewayEvent, WebhookRejected

    product = factories.product_create(stock=2)
    with run_on_commit():
        order = factories.order_delivered(product=product)
    with django_capture_on_commit_callbacks(execute=False):  # booked, not yet submitted
        refund = refunds.order_refund(order_pk=order.pk, now=timezone.now())
    payment = order.payments.get()

    def event(reference, amount=refund.amount):
        return GatewayEvent(
            event_id="evt_r",
            type="refund.succeeded",
            payment_id=payment.payment_id,
            amount=amount,
            currency=refund.currency,
            body={},
            refund_id="sbr_answer",
            refund_reference=reference,
        )

    for wrong in (event(f"refund:{refund.pk + 1}"), event(""), event(f"refund:{refund.pk}", amount=1)):
        with pytest.raises(WebhookRejected), transaction.atomic():
            refunds.refund_succeeded(payment=payment, event=wrong, now=timezone.now())
        assert Refund.objects.get(pk=refund.pk).status == RefundStatus.REQUESTED

    with transaction.atomic():
        refunds.refund_succeeded(payment=payment, event=event(f"refund:{refund.pk}"), now=timezone.now())
    refund.refresh_from_db()
    assert (refund.status, refund.gateway_refund_id) == (RefundStatus.SUCCEEDED, "sbr_answer")
    assert ledger_problems() == []
