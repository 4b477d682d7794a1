"""Issue 14: a merchant's journey in Chromium, on a desktop and on a phone (390x844): sign in with the
second factor, the dashboard's charts drawn from real sales, a new coupon on /merchant/coupons/, an
order opened from the orders list and its refund page. Screenshots of each step go to test-artifacts/
(kept by CI)."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from playwright.sync_api import expect

from shop.models import Coupon, CouponKind
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def chart_values(page, chart: str) -> list[str]:
    """The values of a dashboard chart's data points, from each dot's tooltip ("day: value")."""
    titles = page.locator(f"[data-testid=chart-{chart}] svg circle.dot title").all_text_contents()
    return [title.rsplit(": ", 1)[1] for title in titles]


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_merchant_sees_sales_in_the_charts_creates_a_coupon_and_reaches_an_order_refund(
    device, chromium, live_server, settings, artifacts, sign_in, run_on_commit
):
    settings.ALLOWED_HOSTS = ["*"]
    merchant = factories.merchant_create(name="Lucky Keys")
    product = factories.product_create(merchant=merchant, title="Steam Wallet ¥10", price=1000, stock=10)
    # Sales on two different days: two keys two days ago, then one key and three keys today.
    with time_machine.travel(timezone.now() - timedelta(days=2), tick=True), run_on_commit():
        factories.order_delivered(product=product, quantity=2, email="early@example.com")
    with run_on_commit():
        factories.order_delivered(product=product, email="one@example.com")
        latest = factories.order_delivered(product=product, quantity=3, email="three@example.com")

    context = chromium.new_context(base_url=live_server.url, viewport=VIEWPORTS[device])
    page = context.new_page()
    page.set_default_timeout(10_000)
    shot = lambda name: page.screenshot(path=str(artifacts / f"merchant-{device}-{name}.png"), full_page=True)  # noqa: E731
    try:
        sign_in(page, merchant.user)

        # The dashboard: three paid orders over two days, drawn as points with their values.
        page.goto("/merchant/")
        expect(page.get_by_test_id("total-sales")).to_have_text("3")
        assert sorted(chart_values(page, "sales")) == ["1", "2"]  # 1 order two days ago, 2 today
        assert sorted(chart_values(page, "revenue")) == sorted(
            # Gross, net (after the 5 % fee) and the fee, on each of the two days.
            [f"¥{value} CNY" for value in ("20.00", "40.00", "19.00", "38.00", "1.00", "2.00")]
        )
        assert chart_values(page, "disputes") == []  # nothing disputed: a flat line, no points
        sales_line = page.locator("[data-testid=chart-sales] polyline").get_attribute("points")
        heights = {float(point.split(",")[1]) for point in sales_line.split()}
        assert len(heights) == 3  # zero, one and two orders sit at three different heights
        expect(page.get_by_test_id("recent-orders")).to_contain_text(f"#{latest.pk}")
        _no_sideways_scroll(page)
        shot("1-dashboard")

        # A coupon: created on /merchant/coupons/ and listed there.
        page.get_by_role("navigation", name="Merchant area").get_by_role("link", name="Coupons").click()
        page.wait_for_url(re.compile(r"/merchant/coupons/$"))
        expect(page.get_by_test_id("coupons")).to_contain_text("No coupons yet.")
        page.get_by_label("Code").fill("spring15")
        page.get_by_label("Discount").select_option(CouponKind.PERCENT)
        page.get_by_label("Percentage or amount").fill("15")
        page.get_by_label("Product").select_option(label="Steam Wallet ¥10")
        page.get_by_label("Use limit (optional)").fill("50")
        page.get_by_role("button", name="Create coupon").click()
        page.get_by_text("Coupon SPRING15 created.").wait_for()
        row = page.get_by_test_id("coupons").locator("tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("SPRING15")
        expect(row).to_contain_text("15%")
        expect(row).to_contain_text("Steam Wallet ¥10")
        expect(row).to_contain_text("0 / 50")
        coupon = Coupon.objects.get(merchant=merchant)
        assert (coupon.code, coupon.kind, coupon.value, coupon.product_id, coupon.max_uses) == (
            "SPRING15",
            CouponKind.PERCENT,
            15,
            product.pk,
            50,
        )
        _no_sideways_scroll(page)
        shot("2-coupon")

        # An order from the list, then its refund page (linked from the order, not only by address).
        page.get_by_role("navigation", name="Merchant area").get_by_role("link", name="Orders").click()
        page.wait_for_url(re.compile(r"/merchant/orders/$"))
        expect(page.get_by_test_id("order-count")).to_have_text("3 orders")
        page.get_by_test_id("orders").get_by_role("link", name=f"#{latest.pk}", exact=True).click()
        page.wait_for_url(re.compile(rf"/merchant/orders/{latest.pk}/$"))
        expect(page.get_by_test_id("status")).to_have_text("Delivered")
        _no_sideways_scroll(page)
        shot("3-order")
        page.get_by_test_id("refund-link").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Refund order {latest.pk}")
        expect(page.get_by_role("button", name="Refund", exact=True)).to_be_visible()
        _no_sideways_scroll(page)
        shot("4-refund")
    finally:
        context.close()


def _no_sideways_scroll(page) -> None:
    """The page is no wider than the screen (a phone must not scroll sideways)."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
