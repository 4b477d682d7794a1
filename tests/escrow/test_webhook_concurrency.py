"""Twenty copies of one payment webhook arriving at once deliver the order once and book the money once."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client

from accounts.models import AuditEntry
from escrow.ledger_checks import ledger_problems
from escrow.models import Order, OrderStatus, PaymentStatus, Transfer, WebhookEvent
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]

SENDERS = 20


def _post_all_at_once(requests: list[tuple[bytes, dict[str, str]]]) -> list[tuple[int, dict]]:
    """POST every (body, headers) from its own thread and test client, released together by a barrier."""
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[bytes, dict[str, str]]) -> tuple[int, dict]:
        body, headers = request
        client = Client()
        try:
            barrier.wait(timeout=30)
            response = factories.webhook_post(client, body, headers)
            return response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, requests))


@pytest.mark.parametrize("same_event_id", [True, False], ids=["one-event-sent-20-times", "20-events-one-payment"])
def test_concurrent_webhooks_deliver_once(same_event_id):
    product = factories.product_create(stock=3, price=4999)
    order = factories.order_place(product=product, quantity=2).order
    payment = order.payments.get()
    if same_event_id:
        requests = [factories.signed_webhook(payment=payment, event_id="evt_race")] * SENDERS
    else:  # a provider retrying with a fresh event id each time
        requests = [factories.signed_webhook(payment=payment) for _ in range(SENDERS)]

    answers = _post_all_at_once(requests)

    assert [status for status, _ in answers] == [200] * SENDERS
    results = sorted(body["result"] for _, body in answers)
    if same_event_id:
        assert results == ["duplicate"] * (SENDERS - 1) + ["processed"]
        assert WebhookEvent.objects.filter(payment=payment).count() == 1
    else:
        assert results == ["processed"] * SENDERS
        assert WebhookEvent.objects.filter(payment=payment).count() == SENDERS

    order.refresh_from_db()
    payment.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert payment.status == PaymentStatus.SUCCEEDED
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).count() == 2
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 1
    assert AuditEntry.objects.filter(action="order.delivered", subject_id=str(order.pk)).count() == 1
    assert AuditEntry.objects.filter(action="payment.succeeded", subject_id=str(order.pk)).count() == 1
    assert list(Transfer.objects.filter(order=order, code="payment").values_list("amount", flat=True)) == [9998]
    assert Transfer.objects.filter(order=order, code__in=["share", "fee"]).count() == 2
    assert Order.objects.filter(status=OrderStatus.DELIVERED).count() == 1
    assert ledger_problems() == []
