"""Issue 14: a buyer's whole journey in Chromium, on a desktop and on a phone (390x844): search the
catalogue, open the product, ten keys at the wholesale price with a coupon (the live total follows the
quantity), pay in the sandbox, the keys with "copy all", confirm receipt, rate the merchant.
Screenshots of each step go to test-artifacts/ (kept by CI)."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from disputes.models import Rating
from escrow.models import Order, OrderStatus
from shop import services as shop_services
from shop.models import Category, Coupon, CouponKind
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_buyer_searches_uses_a_coupon_at_the_wholesale_price_pays_confirms_and_rates(
    device, chromium, live_server, settings, artifacts
):
    settings.ALLOWED_HOSTS = ["*"]
    games = Category.objects.create(slug="game-cards", name="Game cards", name_zh_hans="游戏点卡")
    merchant = factories.merchant_create(name="Lucky Keys")
    product = factories.product_create(
        merchant=merchant,
        title="Steam Wallet ¥10",
        price=1000,
        stock=12,
        category=games,
        price_tiers=[[10, 900]],
        description="A **¥10** Steam wallet code.",
    )
    factories.product_create(merchant=merchant, title="App Store card", price=2500, stock=3)
    shop_services.coupon_create(
        merchant=merchant,
        code="SAVE10",
        kind=CouponKind.PERCENT,
        value=10,
        product=product,
        actor=None,
        now=timezone.now(),
    )

    context = chromium.new_context(base_url=live_server.url, viewport=VIEWPORTS[device])
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(10_000)
    shot = lambda name: page.screenshot(path=str(artifacts / f"buyer-{device}-{name}.png"), full_page=True)  # noqa: E731
    try:
        # Search: the query is in the address, so it can be linked.
        page.goto("/")
        page.get_by_label("Search").fill("steam")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(re.compile(r"[?&]q=steam"))
        cards = page.get_by_test_id("product-card")
        expect(cards).to_have_count(1)
        expect(cards.first).to_contain_text("from ¥9.00")
        expect(cards.first).to_contain_text("12 in stock")
        _no_sideways_scroll(page)
        shot("1-search")

        # The product: tiers, the promise, the live total at 10 keys, the coupon.
        cards.first.get_by_role("link", name="Steam Wallet ¥10").click()
        expect(page.get_by_test_id("tiers")).to_contain_text("10 or more")
        expect(page.get_by_test_id("promise")).to_contain_text("Buyer protection")
        page.get_by_label("E-mail for your receipt and order link").fill("buyer@example.com")
        expect(page.get_by_test_id("live-total")).to_have_text("¥10.00 CNY")
        page.get_by_label("Quantity", exact=True).fill("10")
        expect(page.get_by_test_id("live-total")).to_have_text("¥90.00 CNY")
        page.get_by_label("Coupon code (optional)").fill("save10")
        _no_sideways_scroll(page)
        shot("2-product")
        page.get_by_role("button", name="Check out").click()

        # The sandbox charges what the server priced: 10 keys at ¥9.00, less 10 %.
        page.wait_for_url(re.compile(r"/payments/sandbox/pay/"))
        expect(page.locator(".price")).to_have_text("¥81.00 CNY")
        page.get_by_role("button", name="Pay", exact=True).click()

        # The keys, with "copy all", on the order page that fetches them by itself.
        page.wait_for_url(re.compile(r"/orders/\d+/t/[\w:-]+/$"))
        expect(page.get_by_test_id("key")).to_have_count(10)
        order = Order.objects.get(product=product)
        assert (order.amount, order.discount, order.coupon.code) == (8100, 900, "SAVE10")
        assert Coupon.objects.get().uses == 1
        page.reload()  # the timeline with its dates, as the buyer sees it coming back
        expect(page.get_by_test_id("timeline")).to_contain_text("Delivered")
        expect(page.get_by_test_id("discount")).to_contain_text("SAVE10")
        expect(page.get_by_test_id("release-countdown")).to_contain_text("min left")
        page.get_by_role("button", name="Copy all").click()
        expect(page.get_by_role("button", name="All copied")).to_be_visible()
        copied = page.evaluate("navigator.clipboard.readText()").split("\n")
        assert copied == [key.inner_text() for key in page.get_by_test_id("key").all()]
        _no_sideways_scroll(page)
        shot("3-keys")

        # Confirm receipt asks once more: dismissing changes nothing, accepting pays the merchant.
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.get_by_role("button", name="Confirm receipt").click()
        page.wait_for_timeout(300)
        assert Order.objects.get(pk=order.pk).status == OrderStatus.DELIVERED
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Confirm receipt").click()
        page.get_by_text("The order is completed").wait_for()
        assert Order.objects.get(pk=order.pk).status == OrderStatus.COMPLETED
        expect(page.get_by_test_id("timeline")).to_contain_text("Released to the merchant")
        shot("4-completed")

        # Rate the merchant; the rating shows on the catalogue's cards.
        page.get_by_test_id("rate-link").click()
        page.get_by_label("5").check()
        page.get_by_label("Comment (optional)").fill("Fast and working.")
        page.get_by_role("button", name="Send rating").click()
        page.get_by_text("Thank you for rating this merchant.").wait_for()
        assert Rating.objects.get(order=order).stars == 5
        page.goto("/?sort=bestselling")
        expect(page.get_by_test_id("merchant-rating").first).to_contain_text("★ 5.0 (1)")
        expect(page.get_by_test_id("product-card").first).to_contain_text("Steam Wallet ¥10")
        shot("5-rated")
    finally:
        context.close()


def _no_sideways_scroll(page) -> None:
    """The page is no wider than the screen (a phone must not scroll sideways)."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
