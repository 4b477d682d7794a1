"""Orders held for review (the amount or currency paid did not match): staff approve or reject them."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEntry
from escrow import ledger, reviews, services
from escrow.ledger_checks import ledger_problems
from escrow.models import AccountKind, OrderStatus, PaymentStatus, Refund, RefundStatus, Transfer
from shop.models import CardKey, CardKeyStatus
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_reserve(settings):
    settings.RESERVE_PERCENT = 0


def held(run_on_commit, *, amount: str, currency: str = "CNY", quantity: int = 1):
    """An order of ¥100.00 a key whose payment came in as `amount` `currency`: held for review."""
    product = factories.product_create(stock=3, price=10000)
    placed = factories.order_place(product=product, quantity=quantity)
    with run_on_commit():
        response = factories.pay(placed.order, amount=amount, currency=currency)
    assert response.status_code == 200
    placed.order.refresh_from_db()
    assert placed.order.status == OrderStatus.HELD_FOR_REVIEW
    return placed.order


def suspense(currency="CNY"):
    return ledger.platform_account(AccountKind.SUSPENSE, currency).credit_balance


def test_an_overpaid_order_is_approved_delivered_and_the_surplus_refunded(run_on_commit):
    order = held(run_on_commit, amount="101.50")
    staff = factories.user_create(is_staff=True)
    assert suspense() == 10150

    with run_on_commit():
        reviews.order_review_approve(order_pk=order.pk, staff=staff, now=timezone.now())

    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert CardKey.objects.get(order=order).status == CardKeyStatus.SOLD
    assert order.payments.get().status == PaymentStatus.SUCCEEDED
    surplus = Refund.objects.get(order=order)
    assert (surplus.amount, surplus.reason, surplus.key_count) == (150, "overpayment", 0)
    assert surplus.status == RefundStatus.SUCCEEDED
    assert suspense() == 0
    assert ledger.platform_account(AccountKind.ESCROW, "CNY").credit_balance == 10000
    assert AuditEntry.objects.filter(action="order.review_approved", subject_id=str(order.pk), actor=staff).exists()
    assert ledger_problems() == []


def test_an_exactly_covering_payment_in_the_right_currency_is_approved_without_refund(run_on_commit):
    product = factories.product_create(stock=3, price=10000)
    placed = factories.order_place(product=product, quantity=2)
    with run_on_commit():
        factories.pay(placed.order, amount="250.00")  # the order is ¥200.00
    order = placed.order
    staff = factories.user_create(is_staff=True)
    with run_on_commit():
        reviews.order_review_approve(order_pk=order.pk, staff=staff, now=timezone.now())
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).count() == 2
    assert Refund.objects.get(order=order).amount == 5000
    assert ledger_problems() == []


@pytest.mark.parametrize(
    ("amount", "currency", "code"), [("50.00", "CNY", "underpaid"), ("100.00", "USD", "wrong_currency")]
)
def test_an_underpaid_or_wrong_currency_order_cannot_be_approved_but_is_refunded_on_reject(
    run_on_commit, amount, currency, code
):
    order = held(run_on_commit, amount=amount, currency=currency)
    key = CardKey.objects.get(order=order)
    staff = factories.user_create(is_staff=True)
    transfers = Transfer.objects.count()

    with pytest.raises(reviews.ReviewRefused) as error:
        reviews.order_review_approve(order_pk=order.pk, staff=staff, now=timezone.now())
    assert error.value.code == code
    order.refresh_from_db()
    assert order.status == OrderStatus.HELD_FOR_REVIEW
    assert Transfer.objects.count() == transfers
    assert CardKey.objects.get(pk=key.pk).status == CardKeyStatus.RESERVED

    with run_on_commit():
        refund = reviews.order_review_reject(order_pk=order.pk, staff=staff, now=timezone.now(), note="wrong amount")

    order.refresh_from_db()
    refund.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert (refund.amount, refund.currency, refund.status) == (
        5000 if code == "underpaid" else 10000,
        currency,
        "succeeded",
    )
    key.refresh_from_db()
    assert key.status == CardKeyStatus.AVAILABLE and key.order_id is None
    assert suspense(currency) == 0
    entry = AuditEntry.objects.get(action="order.review_rejected", subject_id=str(order.pk))
    assert entry.actor == staff and entry.data["note"] == "wrong amount"
    assert ledger_problems() == []

    with pytest.raises(reviews.ReviewRefused) as again:
        reviews.order_review_reject(order_pk=order.pk, staff=staff, now=timezone.now(), note="again")
    assert again.value.code == "not_held"
    assert Refund.objects.filter(order=order).count() == 1


def test_an_order_that_is_not_held_cannot_be_reviewed(run_on_commit):
    product = factories.product_create(stock=2)
    with run_on_commit():
        order = factories.order_delivered(product=product)
    staff = factories.user_create(is_staff=True)
    transfers = Transfer.objects.count()
    for service in (reviews.order_review_approve, reviews.order_review_reject):
        with pytest.raises(reviews.ReviewRefused) as error:
            service(order_pk=order.pk, staff=staff, now=timezone.now())
        assert error.value.code == "not_held"
    assert Transfer.objects.count() == transfers


def test_staff_approve_and_reject_from_the_admin_with_a_verified_session_only(run_on_commit):
    approved = held(run_on_commit, amount="120.00")
    rejected = held(run_on_commit, amount="10.00")
    staff = factories.user_create(is_staff=True, is_superuser=True)

    unverified = Client()
    unverified.force_login(staff)
    response = unverified.post("/admin/escrow/order/", {"action": "review_approve", "_selected_action": [approved.pk]})
    assert response.status_code == 302 and "/admin/escrow/order/" not in response["Location"]
    approved.refresh_from_db()
    assert approved.status == OrderStatus.HELD_FOR_REVIEW

    client = Client()
    factories.login_verified(client, staff)
    with run_on_commit():
        response = client.post("/admin/escrow/order/", {"action": "review_approve", "_selected_action": [approved.pk]})
    assert response.status_code == 302
    # Rejecting is a full refund: the action opens the review page, which asks for a reason first.
    response = client.post("/admin/escrow/order/", {"action": "review_reject", "_selected_action": [rejected.pk]})
    assert response.status_code == 302 and response["Location"] == f"/staff/orders/{rejected.pk}/review/"
    page = client.get(response["Location"])
    assert "¥10.00" in page.content.decode() and "¥100.00" in page.content.decode()
    refused = client.post(response["Location"], {"decision": "reject", "note": ""})
    assert refused.status_code == 400
    rejected.refresh_from_db()
    assert rejected.status == OrderStatus.HELD_FOR_REVIEW and not Refund.objects.filter(order=rejected).exists()
    with run_on_commit():
        done = client.post(response["Location"], {"decision": "reject", "note": "underpaid by 90"})
    assert done.status_code == 302
    approved.refresh_from_db()
    rejected.refresh_from_db()
    assert approved.status == OrderStatus.DELIVERED
    assert rejected.status == OrderStatus.REFUNDED
    assert Refund.objects.get(order=rejected).note == "underpaid by 90"
    assert ledger_problems() == []


def test_a_held_late_payment_takes_its_keys_again_or_is_refused_when_stock_is_gone(run_on_commit):
    product = factories.product_create(stock=2, price=10000)
    first = factories.order_place(product=product).order
    second = factories.order_place(product=product, email="late@example.com").order
    later = timezone.now() + timedelta(hours=1)
    for order in (first, second):
        assert services.order_expire(order_pk=order.pk, now=later)  # keys back to stock
    with run_on_commit():
        factories.pay(first, amount="100.01")
        factories.pay(second, amount="100.01")
    taken = factories.order_place(product=product, email="other@example.com").order  # one key left for them
    staff = factories.user_create(is_staff=True)

    with run_on_commit():
        reviews.order_review_approve(order_pk=first.pk, staff=staff, now=timezone.now())
    first.refresh_from_db()
    assert first.status == OrderStatus.DELIVERED
    assert CardKey.objects.filter(order=first, status=CardKeyStatus.SOLD).count() == 1

    transfers = Transfer.objects.count()
    with pytest.raises(reviews.ReviewRefused) as error:
        reviews.order_review_approve(order_pk=second.pk, staff=staff, now=timezone.now())
    assert error.value.code == "out_of_stock"
    second.refresh_from_db()
    assert second.status == OrderStatus.HELD_FOR_REVIEW and Transfer.objects.count() == transfers
    assert CardKey.objects.filter(order=taken, status=CardKeyStatus.RESERVED).count() == 1
    assert ledger_problems() == []
