"""A guest buys a key in a real browser: catalog → product → checkout → sandbox pay → key → confirm."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from escrow import ledger
from escrow.models import AccountKind, Order, OrderStatus
from shop.models import Merchant
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_guest_buys_a_key_and_confirms_receipt(page, artifacts):
    product = factories.product_create(stock=3, price=10000, title="Steam Wallet ¥100")

    page.goto("/")
    page.get_by_role("link", name="Steam Wallet ¥100").click()
    assert "3 in stock" in page.get_by_test_id("stock").inner_text()
    page.get_by_label("E-mail for your receipt and order link").fill("guest@example.com")
    page.get_by_label("Quantity").fill("1")
    page.get_by_role("button", name="Check out").click()

    page.wait_for_url(re.compile(r"/payments/sandbox/pay/"))
    page.get_by_role("button", name="Pay", exact=True).click()

    page.wait_for_url(re.compile(r"/orders/\d+/t/[\w-]+/$"))
    started = timezone.now()
    key = page.get_by_test_id("key")
    key.wait_for(timeout=1000)  # no reload: the page fetches its keys by itself
    shown_after = (timezone.now() - started).total_seconds()
    order = Order.objects.get(product=product)
    assert key.inner_text().startswith("KEY-")
    assert order.status == OrderStatus.DELIVERED
    assert shown_after < 1.0

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key.inner_text()
    page.screenshot(path=str(artifacts / "order-page-with-key.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())  # "Confirm receipt" asks once more (it pays the merchant)
    page.get_by_role("button", name="Confirm receipt").click()
    page.get_by_text("The order is completed").wait_for()
    order.refresh_from_db()
    assert order.status == OrderStatus.COMPLETED
    merchant = Merchant.objects.get(pk=product.merchant_id)
    available = ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, "CNY", merchant.pk)
    reserve = ledger.merchant_account(AccountKind.MERCHANT_RESERVE, "CNY", merchant.pk)
    # ¥100 less the 5% fee is the merchant's; a new merchant has 10% of it held in the rolling reserve.
    assert (available.credit_balance, reserve.credit_balance) == (8550, 950)


def test_the_open_order_page_shows_the_key_when_the_payment_lands(page, run_on_commit):
    placed = factories.order_place(product=factories.product_create(stock=1))
    page.goto(f"/orders/{placed.order.pk}/t/{placed.access_token}/")
    expect(page.get_by_test_id("status")).to_have_text("Awaiting payment")
    assert page.get_by_test_id("key").count() == 0

    with run_on_commit():
        assert factories.pay(placed.order).status_code == 200
    started = timezone.now()
    page.get_by_test_id("key").wait_for(timeout=1000)
    assert (timezone.now() - started).total_seconds() < 1.0
    expect(page.get_by_test_id("status")).to_have_text("Delivered")


def test_a_guest_without_the_token_sees_nothing(page, run_on_commit):
    placed = factories.order_place(product=factories.product_create(stock=1))
    with run_on_commit():
        factories.pay(placed.order)
    response = page.goto(f"/orders/{placed.order.pk}/")
    assert response.status == 404
    assert "KEY-" not in page.content()
