"""Issue 7: a late success after a failure is booked, and odd but signed webhook bodies answer 400, not 500."""

import json
import time

import pytest
from django.test import Client

from escrow import ledger
from escrow.gateways.sandbox.gateway import signature_header
from escrow.ledger_checks import ledger_problems
from escrow.models import AccountKind, Order, OrderStatus, Payment, PaymentStatus, Transfer, WebhookEvent
from shop.models import CardKey, CardKeyStatus
from tests import factories

pytestmark = pytest.mark.django_db


# --- payment.failed, then payment.succeeded ----------------------------------------------------------


def test_success_after_failure_delivers_when_stock_is_there(run_on_commit):
    product = factories.product_create(stock=1)
    order = factories.order_place(product=product).order
    with run_on_commit():
        assert factories.pay(order, event_type="payment.failed", event_id="evt_fail").status_code == 200
    assert Order.objects.get(pk=order.pk).status == OrderStatus.CANCELLED
    with run_on_commit():
        response = factories.pay(order, event_id="evt_late_success")
    assert (response.status_code, response.json()) == (200, {"result": "processed"})
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert Payment.objects.get(order=order).status == PaymentStatus.SUCCEEDED
    assert CardKey.objects.get(product=product).status == CardKeyStatus.SOLD
    assert CardKey.objects.get(product=product).order_id == order.pk
    assert Transfer.objects.filter(order=order, code="payment").get().amount == order.amount
    assert ledger_problems() == []


def test_success_after_failure_without_stock_is_refunded_in_full(run_on_commit):
    product = factories.product_create(stock=1)
    order = factories.order_place(product=product).order
    with run_on_commit():
        factories.pay(order, event_type="payment.failed", event_id="evt_fail")
        other = factories.order_place(product=product).order  # takes the key the failure gave back
        response = factories.pay(order, event_id="evt_late_success")
    assert response.status_code == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert CardKey.objects.get(product=product).order_id == other.pk
    assert Transfer.objects.filter(order=order, code="refund").get().amount == order.amount
    assert ledger.platform_account(AccountKind.ESCROW, "CNY").credit_balance == 0
    assert ledger_problems() == []


def test_mismatched_success_after_failure_is_held_for_review(run_on_commit):
    order = factories.order_place(product=factories.product_create(stock=1, price=1500)).order
    with run_on_commit():
        factories.pay(order, event_type="payment.failed", event_id="evt_fail")
        assert factories.pay(order, amount="14.00", event_id="evt_late").status_code == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.HELD_FOR_REVIEW
    assert Payment.objects.get(order=order).status == PaymentStatus.MISMATCHED
    assert Transfer.objects.get(code="payment_mismatch").amount == 1400
    assert not CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).exists()
    assert ledger_problems() == []


def test_a_second_failure_after_a_late_success_changes_nothing(run_on_commit):
    order = factories.order_place(product=factories.product_create(stock=1)).order
    with run_on_commit():
        factories.pay(order, event_type="payment.failed", event_id="evt_1")
        factories.pay(order, event_id="evt_2")
        assert factories.pay(order, event_type="payment.failed", event_id="evt_3").status_code == 200
    assert Payment.objects.get(order=order).status == PaymentStatus.SUCCEEDED
    assert Order.objects.get(pk=order.pk).status == OrderStatus.DELIVERED
    assert Transfer.objects.filter(code="payment").count() == 1


# --- signed bodies that are well signed but not well-formed -------------------------------------------


@pytest.fixture
def order():
    return factories.order_place(product=factories.product_create(stock=2, price=1500)).order


def _fields(order, **changes) -> dict:
    payment = order.payments.get()
    data = {
        "event_id": "evt_ok",
        "type": "payment.succeeded",
        "payment_id": payment.payment_id,
        "amount": "15.00",
        "currency": "CNY",
    }
    return {**data, **changes}


def _post_signed(body: bytes):
    headers = {"Sandbox-Signature": signature_header(body=body, timestamp=int(time.time()))}
    return factories.webhook_post(Client(), body, headers)


def _assert_nothing_changed(order):
    order.refresh_from_db()
    assert order.status == OrderStatus.AWAITING_PAYMENT
    assert order.payments.get().status == PaymentStatus.PENDING
    assert WebhookEvent.objects.count() == 0
    assert Transfer.objects.count() == 0
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.RESERVED).count() == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": "-10"},
        {"amount": "-15.00"},
        {"amount": "0"},
        {"amount": "0.00"},
        {"amount": "1e30"},
        {"amount": 1e30},
        {"amount": "99999999999999999999"},
        {"event_id": "e" * 10_000},
        {"event_id": "evt_\x00nul"},
        {"payment_id": "p" * 10_000},
        {"currency": ["CNY"]},
        {"type": ["payment.succeeded"]},
        {"extra": "\x00"},
    ],
    ids=lambda changes: "-".join(f"{k}={str(v)[:12]!r}({len(str(v))})" for k, v in changes.items()),
)
def test_signed_body_with_bad_fields_answers_400_and_changes_nothing(order, changes):
    response = _post_signed(json.dumps(_fields(order, **changes)).encode())
    assert response.status_code == 400
    assert response.json()["code"] == "webhook_rejected"
    _assert_nothing_changed(order)


@pytest.mark.parametrize("depth", [100, 100_000])
def test_signed_deeply_nested_body_answers_400_and_changes_nothing(order, depth):
    fields = json.dumps(_fields(order))
    body = (fields[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}").encode()
    response = _post_signed(body)
    assert response.status_code == 400
    assert response.json()["code"] == "webhook_rejected"
    _assert_nothing_changed(order)


def test_the_well_formed_body_these_variations_start_from_is_accepted(order, run_on_commit):
    """The cases above fail for their one changed field, not for anything else in the body."""
    with run_on_commit():
        response = _post_signed(json.dumps(_fields(order)).encode())
    assert response.status_code == 200
    assert Order.objects.get(pk=order.pk).status == OrderStatus.DELIVERED
