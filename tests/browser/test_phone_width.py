"""Issue 14, phone first: the main pages at 360 px wide never scroll sideways, even with a 35-character
Chinese product title (which has no space to break at) on the catalogue, the product, the order and the
merchant's pages. Wide tables scroll inside their own box; the page itself stays 360 px wide."""

import pytest
from django.utils import timezone

from shop import services as shop_services
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 360
LONG_TITLE = "腾讯视频超级影视会员年卡官方直充自动发货秒到账支持全平台通用不限设备登录正版授权保障"[:35]

# What sticks out past the right edge, for the failure message: tag, classes and how far it reaches.
OVERFLOWING = """(width) => [...document.querySelectorAll('body *')]
  .filter((el) => el.getBoundingClientRect().right > width + 1 && !el.closest('.table-scroll, pre'))
  .slice(0, 5)
  .map((el) => `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`
    + ` → ${Math.round(el.getBoundingClientRect().right)}px`)"""


# Boxes that scroll sideways inside the page without saying so: a scrolling box must be a named region
# ("… (scrolls sideways)") that the keyboard can reach, as `.table-scroll` is.
SILENT_SCROLLERS = """() => [...document.querySelectorAll('main *')]
  .filter((el) => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX) && el.scrollWidth > el.clientWidth + 1)
  .filter((el) => !(el.getAttribute('role') === 'region' && el.getAttribute('aria-label') && el.tabIndex === 0))
  .map((el) => `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`)"""


def sideways(page) -> dict | None:
    """None when the page is no wider than the screen and each box that scrolls sideways says so, else
    how wide the page is, what sticks out and which boxes scroll silently."""
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    silent = page.evaluate(SILENT_SCROLLERS)
    if scroll_width <= WIDTH and not silent:
        return None
    return {"scrollWidth": scroll_width, "widest": page.evaluate(OVERFLOWING, WIDTH), "silent": silent}


def test_the_main_pages_fit_a_360_px_phone(chromium, live_server, settings, sign_in, run_on_commit, artifacts):
    settings.ALLOWED_HOSTS = ["*"]
    assert len(LONG_TITLE) == 35
    merchant = factories.merchant_create(name="腾讯视频会员旗舰店官方授权自营店铺")
    product = factories.product_create(
        merchant=merchant, title=LONG_TITLE, price=1000, stock=4, description="**" + LONG_TITLE * 2 + "**"
    )
    shop_services.product_update(product=product, actor=None, now=timezone.now(), price_tiers=[[10, 900]])
    placed = factories.order_place(product=product, email="a.rather.long.address.for.a.phone@example.com")
    with run_on_commit():
        assert factories.pay(placed.order).status_code == 200
    order = placed.order

    context = chromium.new_context(base_url=live_server.url, viewport={"width": WIDTH, "height": 780})
    page = context.new_page()
    page.set_default_timeout(10_000)
    found = {}

    def check(path: str, name: str) -> None:
        page.goto(path)
        problem = sideways(page)
        if problem:
            found[path] = problem
            page.screenshot(path=str(artifacts / f"phone360-{name}.png"), full_page=True)

    try:
        check("/", "catalog")
        # The check can fail: a 500 px wide block makes this page scroll sideways, and is named.
        wide = "const d = document.createElement('div'); d.id = 'wide'; d.style.width = '500px'; d.textContent = 'x';"
        page.evaluate(wide + "document.querySelector('main').append(d)")
        assert [entry.split(" → ")[0] for entry in sideways(page)["widest"]] == ["div."]
        page.evaluate("document.getElementById('wide').remove()")
        assert sideways(page) is None
        check(f"/products/{product.pk}/", "product")
        check(f"/orders/{order.pk}/t/{placed.access_token}/", "order")
        page.get_by_test_id("key").first.wait_for()  # the keys (long, unbreakable codes) are on the page
        problem = sideways(page)
        if problem:
            found["order with keys"] = problem
        check("/accounts/login/", "sign-in")
        check("/accounts/signup/", "sign-up")
        check("/rules/", "rules")

        sign_in(page, merchant.user)
        for path, name in [
            ("/merchant/", "dashboard"),
            ("/merchant/orders/", "merchant-orders"),
            (f"/merchant/orders/{order.pk}/", "merchant-order"),
            ("/merchant/coupons/", "coupons"),
        ]:
            check(path, name)
        page.context.clear_cookies()

        sign_in(page, factories.user_create(is_staff=True))
        check("/staff/", "staff-console")
    finally:
        context.close()
    assert found == {}
