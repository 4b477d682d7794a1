"""Stripe Checkout: the session made when the buyer opens the pay link (Stripe's API faked at the HTTP
layer), and the webhook verified by `stripe.Webhook.construct_event` before anything else."""

import hashlib
import hmac
import json
import time
from urllib.parse import parse_qs

import pytest
import responses
from django.test import Client
from django.utils import timezone

from escrow import refunds, services
from escrow.ledger_checks import ledger_problems
from escrow.models import (
    Clawback,
    ClawbackKind,
    Order,
    OrderStatus,
    PaymentStatus,
    RefundStatus,
    Transfer,
    WebhookEvent,
)
from tests.escrow.gateways.conftest import STRIPE_WEBHOOK_SECRET, place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("real_gateways")]

WEBHOOK = "/payments/stripe/webhook/"
PI = "pi_3TestPaymentIntent"


def signed(payload: dict, *, secret: str = STRIPE_WEBHOOK_SECRET, timestamp: int | None = None):
    """Stripe's scheme: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    body = json.dumps(payload).encode()
    t = timestamp or int(time.time())
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={t},v1={digest}"}


def send(payload: dict, **kwargs):
    body, headers = signed(payload, **kwargs)
    return Client().post(WEBHOOK, body, "application/json", headers=headers)


def session_completed(payment, *, event_id: str = "evt_1", amount: int | None = None, currency: str = "cny"):
    return {
        "id": event_id,
        "object": "event",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": "cs_test_1",
                "object": "checkout.session",
                "client_reference_id": payment.payment_id,
                "payment_status": "paid",
                "amount_total": payment.amount if amount is None else amount,
                "currency": currency,
                "payment_intent": PI,
                "metadata": {"payment_id": payment.payment_id},
            }
        },
    }


def dispute_created(*, amount: int, event_id: str = "evt_dp", dispute_id: str = "dp_1"):
    return {
        "id": event_id,
        "object": "event",
        "type": "charge.dispute.created",
        "data": {
            "object": {
                "id": dispute_id,
                "object": "dispute",
                "amount": amount,
                "currency": "cny",
                "charge": "ch_1",
                "payment_intent": PI,
                "reason": "fraudulent",
                "status": "needs_response",
            }
        },
    }


def charge_refunded(*, amount_refunded: int, event_id: str = "evt_rf"):
    return {
        "id": event_id,
        "object": "event",
        "type": "charge.refunded",
        "data": {
            "object": {
                "id": "ch_1",
                "object": "charge",
                "amount": 1500,
                "amount_refunded": amount_refunded,
                "currency": "cny",
                "payment_intent": PI,
            }
        },
    }


def paid(run_on_commit, **kwargs):
    placed = place(gateway="stripe", **kwargs)
    with run_on_commit():
        response = send(session_completed(placed.payment))
    assert response.json() == {"result": "processed"}
    return placed


@responses.activate
def test_pay_link_creates_one_checkout_session_and_sends_the_buyer_there():
    placed = place(gateway="stripe")
    assert placed.pay_url.startswith(f"/payments/stripe/pay/{placed.payment.payment_id}/")
    responses.post(
        "https://api.stripe.com/v1/checkout/sessions",
        json={"id": "cs_test_1", "object": "checkout.session", "url": "https://checkout.stripe.com/c/pay/cs_test_1"},
    )
    response = Client().get(placed.pay_url)
    assert (response.status_code, response["Location"]) == (302, "https://checkout.stripe.com/c/pay/cs_test_1")
    request = responses.calls[0].request
    sent = parse_qs(request.body)
    assert sent["client_reference_id"] == [placed.payment.payment_id]
    assert sent["line_items[0][price_data][unit_amount]"] == ["1500"]
    assert sent["line_items[0][price_data][currency]"] == ["cny"]
    assert request.headers["Idempotency-Key"] == f"checkout:{placed.payment.payment_id}"


def test_good_webhook_delivers(run_on_commit):
    placed = paid(run_on_commit)
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.DELIVERED
    assert placed.order.payments.get().provider_reference == PI
    assert ledger_problems() == []


def test_bad_signature_is_rejected_and_changes_nothing():
    placed = place(gateway="stripe")
    response = send(session_completed(placed.payment), secret="whsec_someone_else")
    assert (response.status_code, response.json()["code"]) == (400, "webhook_rejected")
    assert placed.order.payments.get().status == PaymentStatus.PENDING
    assert WebhookEvent.objects.count() == 0 and Transfer.objects.count() == 0


def test_signature_older_than_the_tolerance_is_rejected():
    placed = place(gateway="stripe")
    response = send(session_completed(placed.payment), timestamp=int(time.time()) - 310)
    assert response.status_code == 400
    assert placed.order.payments.get().status == PaymentStatus.PENDING


def test_replay_is_a_duplicate(run_on_commit):
    placed = paid(run_on_commit)
    again = send(session_completed(placed.payment))
    assert again.json() == {"result": "duplicate"}
    assert Transfer.objects.filter(code="payment").count() == 1


def test_amount_mismatch_is_held_for_review(run_on_commit):
    placed = place(gateway="stripe")
    with run_on_commit():
        send(session_completed(placed.payment, amount=1499))
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.HELD_FOR_REVIEW
    assert ledger_problems() == []


def test_currency_mismatch_is_held_for_review(run_on_commit):
    placed = place(gateway="stripe")
    with run_on_commit():
        send(session_completed(placed.payment, currency="usd"))
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.HELD_FOR_REVIEW


def test_unknown_order_is_rejected():
    placed = place(gateway="stripe")
    placed.payment.payment_id = "stp_nobody"
    response = send(session_completed(placed.payment))
    assert response.status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_an_event_the_shop_does_not_act_on_is_acknowledged_and_stored_nowhere():
    response = send({"id": "evt_x", "object": "event", "type": "customer.created", "data": {"object": {}}})
    assert response.json() == {"result": "ignored"}
    assert WebhookEvent.objects.count() == 0


def test_chargeback_on_a_completed_order_takes_the_share_and_fee_back(run_on_commit):
    placed = paid(run_on_commit)
    services.order_confirm_receipt(order=placed.order, now=timezone.now())
    assert send(dispute_created(amount=1500)).json() == {"result": "processed"}
    assert send(dispute_created(amount=1500)).json() == {"result": "duplicate"}
    clawback = Clawback.objects.get()
    assert (clawback.kind, clawback.amount, clawback.share + clawback.fee) == (ClawbackKind.CHARGEBACK, 1500, 1500)
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.REFUNDED
    assert Transfer.objects.get(transfer_id=f"clawback:{clawback.pk}").amount == 1500
    assert ledger_problems() == []


def test_chargeback_while_in_escrow_releases_then_takes_back(run_on_commit):
    placed = paid(run_on_commit)  # delivered, money still held
    assert send(dispute_created(amount=1500)).json() == {"result": "processed"}
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.REFUNDED
    assert ledger_problems() == []


@responses.activate
def test_refund_by_the_shop_settles_on_stripes_answer_and_its_charge_refunded_moves_nothing_more(run_on_commit):
    placed = paid(run_on_commit)
    responses.post(
        "https://api.stripe.com/v1/refunds",
        json={"id": "re_1", "object": "refund", "status": "succeeded", "amount": 1500, "currency": "cny"},
    )
    with run_on_commit():
        refund = refunds.order_refund(order_pk=placed.order.pk, now=timezone.now())
    sent = parse_qs(responses.calls[0].request.body)
    assert (sent["payment_intent"], sent["amount"]) == ([PI], ["1500"])
    assert responses.calls[0].request.headers["Idempotency-Key"] == f"refund:{refund.pk}"
    refund.refresh_from_db()
    assert (refund.status, refund.gateway_refund_id) == (RefundStatus.SUCCEEDED, "re_1")
    assert send(charge_refunded(amount_refunded=1500)).json() == {"result": "processed"}
    assert Clawback.objects.count() == 0  # the shop's own refund explains it
    assert ledger_problems() == []


def test_refund_made_at_stripes_dashboard_is_taken_back_from_the_merchant(run_on_commit):
    placed = paid(run_on_commit)
    services.order_confirm_receipt(order=placed.order, now=timezone.now())
    assert send(charge_refunded(amount_refunded=500)).json() == {"result": "processed"}
    clawback = Clawback.objects.get()
    assert (clawback.kind, clawback.amount) == (ClawbackKind.PROVIDER_REFUND, 500)
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.PARTIALLY_REFUNDED
    # Later the rest: cumulative 1500, of which 500 already booked.
    assert send(charge_refunded(amount_refunded=1500, event_id="evt_rf2")).json() == {"result": "processed"}
    assert sorted(Clawback.objects.values_list("amount", flat=True)) == [500, 1000]
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.REFUNDED
    assert ledger_problems() == []
