"""An axe-core scan (installed from npm by `npm ci`, see package.json) of the main pages, at phone size:
no serious or critical violation. The pages include the buyer's order page opened by its link (unpaid,
delivered with its keys, disputed), and a second test shows the scan does report a violation put there.
Locally the tests skip when node_modules is missing; CI runs `npm ci` first and forbids skips
(CI_REQUIRE_ALL_TESTS)."""

from pathlib import Path

import pytest

from tests import factories
from tests.disputes.test_staff_pages import escalated

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
AXE_SOURCE = AXE.read_text(encoding="utf-8") if AXE.exists() else ""

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not AXE.exists(), reason="needs axe-core: run `npm ci` in the repository"),
]


def serious_violations(page) -> list[str]:
    # Evaluated through the DevTools protocol, which the page's Content-Security-Policy does not govern
    # (a <script> tag would be refused, rightly).
    page.evaluate(AXE_SOURCE + "\n;true")
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_the_main_pages_have_no_serious_accessibility_violations(
    page, chromium, live_server, sign_in, run_on_commit, artifacts
):
    dispute = escalated(run_on_commit)
    order = dispute.order
    problems = {}
    public = ["/", f"/products/{order.product_id}/", "/accounts/login/", "/rules/", "/faq/", "/transparency/"]
    for path in public:
        page.goto(path)
        problems[path] = serious_violations(page)

    # The buyer's order page, as a guest opens it from the link the checkout sends: delivered, with its
    # keys fetched and shown (copy buttons, the countdown, "Confirm receipt"), disputed, and unpaid.
    placed = factories.order_place(product=factories.product_create(stock=2, title="Steam Wallet ¥10"))
    with run_on_commit():
        assert factories.pay(placed.order).status_code == 200
    for path in (
        f"/orders/{placed.order.pk}/t/{placed.access_token}/",
        f"/orders/{order.pk}/t/{order.access_token}/",
    ):
        page.goto(path)
        page.get_by_test_id("key").first.wait_for()
        problems[path] = serious_violations(page)
    page.screenshot(path=str(artifacts / "a11y-order-phone.png"), full_page=True)
    unpaid = factories.order_place(product=factories.product_create(stock=1))  # the expiry countdown, "pay"
    path = f"/orders/{unpaid.order.pk}/t/{unpaid.access_token}/"
    page.goto(path)
    problems[path] = serious_violations(page)

    merchant_context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    merchant_page = merchant_context.new_page()
    sign_in(merchant_page, order.merchant.user)
    for path in (
        "/merchant/",
        "/merchant/orders/",
        f"/merchant/orders/{order.pk}/",
        "/merchant/money/",
        "/merchant/coupons/",
    ):
        merchant_page.goto(path)
        problems[path] = serious_violations(merchant_page)
    merchant_page.screenshot(path=str(artifacts / "a11y-merchant-order-desktop.png"), full_page=True)
    merchant_context.close()

    sign_in(page, factories.user_create(is_staff=True))
    for path in ("/staff/", "/staff/queues/disputes/"):
        page.goto(path)
        problems[path] = serious_violations(page)
    page.screenshot(path=str(artifacts / "a11y-staff-console-phone.png"), full_page=True)
    assert {path: found for path, found in problems.items() if found} == {}


def test_the_scan_reports_what_it_should(page):
    """Not vacuous: an image without a text alternative and a nameless button, put on a clean page,
    are reported as the critical violations they are."""
    page.goto("/rules/")
    assert serious_violations(page) == []
    page.evaluate(
        """() => {
        const image = document.createElement('img');
        image.src = '/static/favicon.svg';
        const button = document.createElement('button');
        document.querySelector('main').append(image, button);
    }"""
    )
    found = serious_violations(page)
    assert [line.split(" ")[0] for line in found] == ["button-name", "image-alt"], found
