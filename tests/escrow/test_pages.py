"""The buyer's pages, driven through Django's test client."""

import re

import pytest
from django.test import Client

from escrow.ledger_checks import ledger_problems
from escrow.models import KeyReveal, Order, OrderStatus
from shop.models import CardKey
from tests import factories

pytestmark = pytest.mark.django_db


def test_guest_journey_through_the_pages(run_on_commit):
    product = factories.product_create(stock=2, price=4999, title="Steam ¥50")
    client = Client()
    catalog = client.get("/")
    assert "Steam ¥50" in catalog.text and "2 in stock" in catalog.text
    page = client.get(f"/products/{product.pk}/")
    assert "¥49.99" in page.text and "Key Store" in page.text

    with run_on_commit():
        checkout = client.post(f"/products/{product.pk}/checkout/", {"email": "guest@example.com", "quantity": 1})
    assert checkout.status_code == 302
    pay_page = client.get(checkout.url)
    assert pay_page.status_code == 200 and "¥49.99" in pay_page.text
    with run_on_commit():
        paid = client.post(
            checkout.url, {"outcome": "pay", "return": re.search(r'name="return" value="([^"]+)"', pay_page.text)[1]}
        )
    order_url = paid.url
    assert re.fullmatch(r"/orders/\d+/t/[\w-]+/", order_url)

    order_page = client.get(order_url)
    key = CardKey.objects.get(order__isnull=False)
    order = Order.objects.get(pk=key.order_id)
    assert order.status == OrderStatus.DELIVERED
    assert 'data-testid="key"' in order_page.text
    assert "Confirm receipt" in order_page.text
    assert KeyReveal.objects.filter(order=order, channel="page").count() == 1

    confirmed = client.post(order_url + "confirm/", follow=True)
    assert "The order is completed" in confirmed.text
    assert Order.objects.get(pk=order.pk).status == OrderStatus.COMPLETED
    assert ledger_problems() == []


def test_order_page_polls_until_paid_then_the_keys_fragment_reveals():
    placed = factories.order_place(product=factories.product_create(stock=1))
    base = f"/orders/{placed.order.pk}/t/{placed.access_token}/"
    client = Client()
    waiting = client.get(base)
    assert "data-poll-status" in waiting.text and 'data-testid="key"' not in waiting.text
    assert client.get(base + "status/").json() == {
        "status": "awaiting_payment",
        "label": "Awaiting payment",
        "has_keys": False,
    }
    assert client.get(base + "keys/").status_code == 409
    assert KeyReveal.objects.count() == 0


def test_no_token_wrong_token_or_another_orders_token_is_404(run_on_commit):
    mine = factories.order_place(product=factories.product_create(stock=1))
    theirs = factories.order_place(product=factories.product_create(stock=1))
    with run_on_commit():
        factories.pay(theirs.order)
    client = Client()
    pk = theirs.order.pk
    for url in (
        f"/orders/{pk}/",
        f"/orders/{pk}/t/wrong-token/",
        f"/orders/{pk}/t/{mine.access_token}/",
        f"/orders/{pk}/t/{mine.access_token}/keys/",
        f"/orders/{pk}/t/{mine.access_token}/status/",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "KEY-" not in response.text
    assert client.post(f"/orders/{pk}/t/{mine.access_token}/confirm/").status_code == 404
    assert KeyReveal.objects.count() == 0
    assert Order.objects.get(pk=pk).status == OrderStatus.DELIVERED


def test_checkout_form_errors_are_shown_and_nothing_is_ordered():
    product = factories.product_create(stock=1)
    client = Client()
    response = client.post(f"/products/{product.pk}/checkout/", {"email": "bad", "quantity": 0})
    assert response.status_code == 400
    assert "Enter a valid email address." in response.text
    response = client.post(f"/products/{product.pk}/checkout/", {"email": "g@example.com", "quantity": 2})
    assert response.status_code == 400 and "At most" not in response.text
    assert "not enough stock" in response.text
    assert Order.objects.count() == 0


def test_failed_sandbox_payment_cancels_the_order(run_on_commit):
    product = factories.product_create(stock=1)
    client = Client()
    checkout = client.post(f"/products/{product.pk}/checkout/", {"email": "g@example.com", "quantity": 1})
    with run_on_commit():
        client.post(checkout.url, {"outcome": "fail"})
    assert Order.objects.get().status == OrderStatus.CANCELLED
    assert CardKey.objects.get().status == "available"


def test_pay_page_refuses_to_redirect_off_site():
    placed = factories.order_place(product=factories.product_create(stock=1))
    payment = placed.order.payments.get()
    response = Client().post(
        f"/payments/sandbox/pay/{payment.payment_id}/", {"outcome": "fail", "return": "https://evil.example/"}
    )
    assert response.url == "/"


def test_my_orders_lists_only_the_buyers_orders():
    buyer, other = factories.user_create(), factories.user_create()
    product = factories.product_create(stock=2, title="Mine")
    factories.order_place(product=product, buyer=buyer)
    factories.order_place(product=factories.product_create(stock=1, title="Not mine"), buyer=other)
    client = Client()
    assert client.get("/orders/").status_code == 302
    client.force_login(buyer)
    page = client.get("/orders/")
    assert "Mine" in page.text and "Not mine" not in page.text


def test_pages_speak_chinese():
    product = factories.product_create(stock=1)
    client = Client()
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    page = client.get(f"/products/{product.pk}/")
    assert "结账" in page.text  # "Check out"
    assert 'lang="zh-hans"' in page.text


def test_user_text_is_escaped():
    factories.product_create(stock=1, title="<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in Client().get("/").text
