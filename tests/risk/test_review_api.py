"""The staff API: the review queue's approve / reject paths (through escrow's services, audited,
idempotent, the ledger clean after) and the stored decisions with their filters."""

import pytest
from django.test import Client
from django.utils import timezone

import risk
from accounts import services as accounts_services
from accounts.models import AuditEntry
from escrow.ledger_checks import ledger_problems
from escrow.models import Order, OrderStatus, Refund, Withdrawal, WithdrawalStatus
from risk.models import ReviewItem
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.risk.conftest import rule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_rules")]


@pytest.fixture
def staff_api():
    user = factories.user_create(is_staff=True)
    _record, secret = accounts_services.staff_api_token_create_unchecked(user=user, name="t", now=timezone.now())
    return Client(headers={"Authorization": f"Token {secret}"})


def held_order(run_on_commit) -> Order:
    rule("checkout", "amount", "gte", 1, "review")
    product = factories.product_create(stock=3, price=2000)
    response = Client(REMOTE_ADDR="198.51.100.5").post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": 1, "email": "g@example.com"},
        content_type="application/json",
    )
    order = Order.objects.get(pk=response.json()["id"])
    with run_on_commit():
        factories.pay(order)
    order.refresh_from_db()
    assert order.status == OrderStatus.HELD_FOR_REVIEW
    return order


def item_of(kind, pk) -> ReviewItem:
    return ReviewItem.objects.get(kind=kind, subject_id=str(pk))


def test_the_queue_lists_held_orders_with_their_reasons(staff_api, run_on_commit):
    order = held_order(run_on_commit)
    results = staff_api.get("/api/v1/staff/review-queue/").json()["results"]
    assert [(r["kind"], r["subject"]) for r in results] == [
        ("order", {"type": "order", "id": order.pk, "email": "g@example.com"})
    ]
    assert results[0]["reasons"][0]["signal"] == "subject_flagged" and results[0]["created_at"]


def test_approve_delivers_once_and_reject_after_is_refused(staff_api, run_on_commit):
    order = held_order(run_on_commit)
    item = item_of("order", order.pk)
    with run_on_commit():
        response = staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/approve/", {"reason": "known buyer"})
    assert response.status_code == 200 and response.json()["status"] == "approved"
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/approve/", {"reason": "again"}).status_code == 200
    refused = staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/reject/", {"reason": "no"})
    assert (refused.status_code, refused.json()["code"]) == (409, "already_decided")
    assert AuditEntry.objects.filter(action="risk.review_approved", subject_id=str(item.pk)).count() == 1
    assert ledger_problems() == []


def test_reject_refunds_in_full_and_restocks(staff_api, run_on_commit):
    order = held_order(run_on_commit)
    item = item_of("order", order.pk)
    with run_on_commit():
        response = staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/reject/", {"reason": "stolen card"})
    assert response.status_code == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert Refund.objects.get(order=order).amount == order.amount
    assert CardKey.objects.filter(product=order.product, status=CardKeyStatus.AVAILABLE).count() == 3
    assert staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/reject/", {"reason": "x"}).status_code == 200
    assert Refund.objects.filter(order=order).count() == 1
    assert ledger_problems() == []


def test_an_order_held_for_a_mismatched_amount_is_in_the_queue_and_approved_through_it(staff_api, run_on_commit):
    product = factories.product_create(stock=2, price=1000)
    placed = factories.order_place(product=product)
    with run_on_commit():
        factories.pay(placed.order, amount="12.00")  # overpaid
    item = item_of("order", placed.order.pk)
    assert item.reasons[0]["rule"] == "amount_mismatch"
    with run_on_commit():
        assert staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/approve/", {"reason": "ok"}).status_code == 200
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.DELIVERED
    assert ledger_problems() == []


def _held_withdrawal(run_on_commit):
    product = factories.product_create(stock=2, price=10000)
    with run_on_commit():
        order = factories.order_delivered(product=product)
    from escrow import services, withdrawals

    services.order_confirm_receipt(order=order, now=timezone.now())
    merchant = product.merchant
    payout = factories.payout_account_create(merchant=merchant)
    device = factories.totp_device_create(user=merchant.user)
    rule("withdrawal", "amount", "gte", 1, "review")
    withdrawal = withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=payout.pk,
        amount=5000,
        currency="CNY",
        code=factories.totp_code(device),
        now=timezone.now(),
    )
    assert withdrawal.status == WithdrawalStatus.PENDING_REVIEW
    return withdrawal


def test_a_held_withdrawal_approved_with_a_reference_is_paid(staff_api, run_on_commit):
    withdrawal = _held_withdrawal(run_on_commit)
    item = item_of("withdrawal", withdrawal.pk)
    response = staff_api.post(
        f"/api/v1/staff/review-queue/{item.pk}/approve/", {"reason": "called the merchant", "payout_reference": "R-1"}
    )
    assert response.status_code == 200
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == WithdrawalStatus.PAID
    assert ledger_problems() == []


def test_a_held_withdrawal_rejected_returns_the_money(staff_api, run_on_commit):
    withdrawal = _held_withdrawal(run_on_commit)
    item = item_of("withdrawal", withdrawal.pk)
    assert staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/reject/", {"reason": "takeover"}).status_code == 200
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == WithdrawalStatus.REJECTED
    assert ledger_problems() == []


def test_a_frozen_account_is_unfrozen_by_approval(staff_api):
    rule("checkout", "amount", "gte", 1, "freeze")
    now = timezone.now()
    risk.assess(event="checkout", context=risk.RiskContext(actor_id=77, amount=5), now=now)
    item = item_of("user", 77)
    assert staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/approve/", {"reason": "verified"}).status_code == 200
    rule_pk = risk.assess(event="checkout", context=risk.RiskContext(actor_id=77, amount=5), now=now)
    assert rule_pk.reasons[0]["rule"] != "account_frozen"


def test_the_queue_needs_a_staff_token_and_a_reason(staff_api):
    assert Client().get("/api/v1/staff/review-queue/").status_code in {401, 403}
    buyer = factories.user_create()
    client = Client()
    client.force_login(buyer)
    assert client.get("/api/v1/staff/review-queue/").status_code == 403
    item = risk.review_open(kind="user", subject_id=1, now=timezone.now())
    response = staff_api.post(f"/api/v1/staff/review-queue/{item.pk}/approve/", {})
    assert response.status_code == 400 and ReviewItem.objects.get(pk=item.pk).status == "open"
    assert staff_api.post("/api/v1/staff/review-queue/999999/approve/", {"reason": "x"}).status_code == 404


def test_decisions_are_listed_with_reasons_and_filtered(staff_api):
    rule("checkout", "amount", "gte", 500, "review")
    now = timezone.now()
    big = risk.assess(
        event="checkout", context=risk.RiskContext(email="a@example.com", amount=900), subject=("order", 5), now=now
    )
    risk.assess(event="checkout", context=risk.RiskContext(email="a@example.com", amount=100), now=now)
    body = staff_api.get("/api/v1/staff/risk-decisions/", {"outcome": "review"}).json()
    assert [d["id"] for d in body["results"]] == [big.pk]
    assert body["results"][0]["reasons"] == [
        {"rule": big.rule_id, "signal": "amount", "value": 900.0, "threshold": 500.0}
    ]
    assert body["results"][0]["subject"] == {"type": "order", "id": "5"}
    by_subject = staff_api.get("/api/v1/staff/risk-decisions/", {"subject_type": "order", "subject_id": "5"}).json()
    assert len(by_subject["results"]) == 1
    assert (
        len(
            staff_api.get("/api/v1/staff/risk-decisions/", {"event": "checkout", "since": now.isoformat()}).json()[
                "results"
            ]
        )
        == 2
    )
    bad = staff_api.get("/api/v1/staff/risk-decisions/", {"since": "yesterday"})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid")
