"""A paid order is never left undelivered: the broker failing at enqueue time, the sweeper, verify_orders.

These run without a worker: the broker is an address where nothing listens, so the enqueue after the
payment's commit really fails. tests/escrow/test_delivery_faults.py does the same with real processes.
"""

import base64
import json
import logging
import time
from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import AuditEntry
from escrow import delivery
from escrow.ledger_checks import ledger_problems
from escrow.models import Order, OrderStatus, PaymentStatus, WebhookEvent
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import REDIS_CACHE_URL
from tests.processes import free_port, publishing_to

# The payment must really commit for its on-commit enqueue to run, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker_down(_fast_and_local):
    with publishing_to(f"redis://127.0.0.1:{free_port()}/0"):
        yield


def _paid_order(quantity: int = 1) -> Order:
    order = factories.order_place(product=factories.product_create(stock=quantity + 1), quantity=quantity).order
    response = factories.pay(order, client=Client())
    assert (response.status_code, response.json()) == (200, {"result": "processed"})
    order.refresh_from_db()
    return order


def _assert_delivered_once(order: Order) -> None:
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).count() == order.quantity
    assert AuditEntry.objects.filter(action="order.delivered", subject_id=str(order.pk)).count() == 1


def test_webhook_answers_200_and_books_the_payment_when_the_broker_is_down(broker_down, caplog):
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="escrow.delivery"):
        order = _paid_order(quantity=2)

    assert time.monotonic() - started < 5  # the publish retries are bounded: the provider is not kept waiting
    assert order.status == OrderStatus.PAID
    assert order.payments.get().status == PaymentStatus.SUCCEEDED
    assert WebhookEvent.objects.filter(payment__order=order).count() == 1
    assert [r.order for r in caplog.records if r.getMessage() == "escrow.delivery_enqueue_failed"] == [order.pk]
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.RESERVED).count() == 2
    assert ledger_problems() == []


def test_the_sandbox_pay_page_completes_when_the_broker_is_down(broker_down):
    order = factories.order_place(product=factories.product_create(stock=1)).order
    payment = order.payments.get()

    response = Client().post(f"/payments/sandbox/pay/{payment.payment_id}/", {"outcome": "pay", "return": "/"})

    assert response.status_code == 302
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAID


def test_the_sweeper_delivers_a_paid_order_whose_task_was_lost(broker_down, settings):
    settings.ESCROW_DELIVERY_GRACE_SECONDS = 5
    order = _paid_order(quantity=2)
    other = _paid_order()

    # Within the grace period the queued task may still come: the sweeper leaves the order alone.
    assert delivery.orders_deliver_stuck(now=order.paid_at + timedelta(seconds=4)) == 0
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAID

    assert delivery.orders_deliver_stuck(now=other.paid_at + timedelta(seconds=6)) == 2
    _assert_delivered_once(order)
    _assert_delivered_once(other)
    # A late task, or a second sweep, delivers nothing twice.
    assert delivery.orders_deliver_stuck(now=other.paid_at + timedelta(seconds=60)) == 0
    _assert_delivered_once(order)
    assert ledger_problems() == []


def test_verify_orders_reports_orders_paid_and_undelivered_for_over_a_minute(broker_down, capsys):
    order = _paid_order()
    call_command("verify_orders")  # paid just now: its delivery may still be on its way
    assert "every paid order" in capsys.readouterr().out.lower()

    with time_machine.travel(order.paid_at + timedelta(seconds=61)), pytest.raises(CommandError, match="1 order"):
        call_command("verify_orders")
    assert f"Order {order.pk} was paid" in capsys.readouterr().err
    assert delivery.delivery_problems(now=order.paid_at + timedelta(seconds=59)) == []

    delivery.orders_deliver_stuck(now=order.paid_at + timedelta(seconds=61))
    with time_machine.travel(order.paid_at + timedelta(minutes=5)):
        call_command("verify_orders")
    assert Order.objects.get(pk=order.pk).status == OrderStatus.DELIVERED


def test_the_delivery_message_carries_its_arguments_and_their_repr_as_celery_writes_them(redis_cache):
    """The enqueue writes the message's argsrepr and kwargsrepr itself (Celery's saferepr is a tenth of
    the publish); what monitoring shows must be exactly what Celery would have written."""
    from celery.utils.saferepr import saferepr

    with publishing_to(REDIS_CACHE_URL):  # the broker on the fixture's Redis database
        delivery.order_delivery_enqueue(order_pk=4321)
    (raw,) = redis_cache.lrange("celery", 0, -1)
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["task"] == "escrow.deliver_order"
    assert (headers["argsrepr"], headers["kwargsrepr"]) == (saferepr(()), saferepr({"order_pk": 4321}))
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([], {"order_pk": 4321})
