"""A buyer's daily spending limit: lowering applies at once, raising after 24 hours; a checkout that
would cross it is refused on the page and in the API, and two racing checkouts cannot both pass."""

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import AuditEntry, SpendingLimit
from accounts.services import spending_limit_set
from core.errors import Refused
from escrow import services as escrow_services
from escrow.models import Order, OrderStatus
from tests.conftest import requires_postgres
from tests.escrow.test_concurrency import run_in_threads
from tests.factories import order_place, product_create, user_create


@pytest.fixture
def buyer(db):
    return user_create()


@pytest.fixture
def product(db):
    return product_create(stock=10, price=3000)  # ¥30.00


def test_lowering_applies_at_once_and_raising_after_24_hours(buyer):
    now = timezone.now()
    limit = spending_limit_set(user=buyer, currency="CNY", amount=10000, now=now)
    assert limit.effective_amount(now) == 10000  # the first limit lowers "no limit": at once
    limit = spending_limit_set(user=buyer, currency="CNY", amount=50000, now=now)
    assert limit.effective_amount(now) == 10000
    assert limit.effective_amount(now + timedelta(hours=23, minutes=59)) == 10000
    assert limit.effective_amount(now + timedelta(hours=24)) == 50000
    # Lowering cancels the raise still waiting.
    limit = spending_limit_set(user=buyer, currency="CNY", amount=5000, now=now + timedelta(hours=1))
    assert limit.effective_amount(now + timedelta(days=2)) == 5000
    # Removing the limit is a raise too.
    limit = spending_limit_set(user=buyer, currency="CNY", amount=None, now=now + timedelta(hours=2))
    assert limit.effective_amount(now + timedelta(hours=3)) == 5000
    assert limit.effective_amount(now + timedelta(hours=26)) is None
    assert AuditEntry.objects.filter(action="spending_limit.changed", subject_id=str(buyer.pk)).count() == 4
    for amount, currency in ((-1, "CNY"), (100, "XXX")):
        with pytest.raises(Refused):
            spending_limit_set(user=buyer, currency=currency, amount=amount, now=now + timedelta(hours=3))
    assert AuditEntry.objects.filter(action="spending_limit.changed", subject_id=str(buyer.pk)).count() == 4
    assert SpendingLimit.objects.filter(user=buyer).count() == 1


def test_a_checkout_over_the_limit_is_refused_saying_the_limit_and_what_is_left(buyer, product):
    spending_limit_set(user=buyer, currency="CNY", amount=10000, now=timezone.now())
    order_place(product=product, quantity=2, buyer=buyer)  # ¥60 of ¥100
    with pytest.raises(escrow_services.CheckoutError) as refused:
        order_place(product=product, quantity=2, buyer=buyer)  # another ¥60
    assert refused.value.code == "spending_limit"
    assert "¥100.00 CNY" in str(refused.value)
    assert "¥40.00 CNY is left today" in str(refused.value)
    assert Order.objects.filter(buyer=buyer).count() == 1
    order_place(product=product, quantity=1, buyer=buyer)  # ¥30 still fits


def test_orders_that_ended_without_the_money_do_not_count(buyer, product):
    spending_limit_set(user=buyer, currency="CNY", amount=6000, now=timezone.now())
    placed = order_place(product=product, quantity=2, buyer=buyer)
    Order.objects.filter(pk=placed.order.pk).update(status=OrderStatus.EXPIRED)
    order_place(product=product, quantity=2, buyer=buyer)
    # Another currency, or yesterday's orders, do not count either.
    usd = product_create(stock=3, price=3000, currency="USD")
    order_place(product=usd, quantity=3, buyer=buyer)
    Order.objects.filter(buyer=buyer, currency="CNY").update(created_at=timezone.now() - timedelta(days=2))
    order_place(product=product, quantity=2, buyer=buyer)


def test_a_raise_waits_24_hours_before_a_checkout_may_use_it(buyer, product):
    now = timezone.now()
    spending_limit_set(user=buyer, currency="CNY", amount=3000, now=now - timedelta(days=2))
    spending_limit_set(user=buyer, currency="CNY", amount=100000, now=now)  # a thief raises it
    with pytest.raises(escrow_services.CheckoutError):
        order_place(product=product, quantity=2, buyer=buyer)
    assert not Order.objects.filter(buyer=buyer).exists()
    escrow_services.order_place(
        product_pk=product.pk, quantity=2, email="b@example.com", buyer=buyer, now=now + timedelta(hours=24)
    )


def test_the_checkout_page_shows_the_refusal_as_a_form_error(buyer, product):
    spending_limit_set(user=buyer, currency="CNY", amount=5000, now=timezone.now())
    client = Client()
    client.force_login(buyer)
    response = client.post(f"/products/{product.pk}/checkout/", {"email": "b@example.com", "quantity": 2})
    assert response.status_code == 400
    assert "daily spending limit of ¥50.00 CNY" in response.content.decode()
    assert not Order.objects.exists()


def test_the_api_answers_403_spending_limit(buyer, product):
    spending_limit_set(user=buyer, currency="CNY", amount=5000, now=timezone.now())
    client = APIClient()
    client.force_login(buyer)
    response = client.post(
        "/api/v1/orders/", {"product": product.pk, "quantity": 2, "email": "b@example.com"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "spending_limit"
    assert "¥50.00 CNY is left today" in response.json()["detail"]
    assert not Order.objects.exists()
    # A guest has no limit.
    response = APIClient().post(
        "/api/v1/orders/", {"product": product.pk, "quantity": 2, "email": "b@example.com"}, format="json"
    )
    assert response.status_code == 201


def test_the_limits_page_sets_a_limit_and_shows_todays_spend(buyer, product):
    order_place(product=product, quantity=1, buyer=buyer)
    client = Client()
    assert client.get("/account/limits/").status_code == 302  # signed-in buyers only
    client.force_login(buyer)
    page = client.get("/account/limits/").content.decode()
    assert "¥30.00 CNY" in page  # spent today
    response = client.post("/account/limits/", {"currency": "CNY", "amount": "80"}, follow=True)
    assert "applies now" in response.content.decode()
    assert SpendingLimit.objects.get(user=buyer, currency="CNY").amount == 8000
    page = client.get("/account/limits/").content.decode()
    assert "¥50.00 CNY" in page  # left today
    response = client.post("/account/limits/", {"currency": "CNY", "amount": "500"}, follow=True)
    assert "applies in 24 hours" in response.content.decode()
    assert "Rises to ¥500.00 CNY" in response.content.decode()
    response = client.post("/account/limits/", {"currency": "CNY", "amount": "-1"})
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert SpendingLimit.objects.get(user=buyer, currency="CNY").amount == 8000


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_racing_checkouts_cannot_both_pass_the_limit(monkeypatch):
    """Each checkout counts today's spend, then inserts its order. Made slow between the two (what a busy
    database does), two checkouts that each fit alone would both pass unless the count runs under the
    buyer's limit-row lock: the second counts only after the first commits, and is refused."""
    buyer = user_create()
    product = product_create(stock=10, price=3000)
    spending_limit_set(user=buyer, currency="CNY", amount=5000, now=timezone.now())
    counted = escrow_services.buyer_spent_since

    def slow_count(**kwargs):
        spent = counted(**kwargs)
        time.sleep(0.5)
        return spent

    monkeypatch.setattr(escrow_services, "buyer_spent_since", slow_count)

    def checkout(index):
        # Different e-mails and no address: the reservation caps' locks do not line them up.
        return escrow_services.order_place(
            product_pk=product.pk, quantity=1, email=f"b{index}@example.com", buyer=buyer, now=timezone.now()
        )

    results = run_in_threads(2, checkout)
    refused = [r for r in results if isinstance(r, escrow_services.CheckoutError)]
    assert len(refused) == 1, results
    assert refused[0].code == "spending_limit"
    assert Order.objects.filter(buyer=buyer).count() == 1
