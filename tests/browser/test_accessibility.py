"""An axe-core scan (installed from npm by `npm ci`, see package.json) of the main pages, at phone size:
no serious or critical violation. Locally the test skips when node_modules is missing; CI runs `npm ci`
first and forbids skips (CI_REQUIRE_ALL_TESTS)."""

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

    merchant_context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    merchant_page = merchant_context.new_page()
    sign_in(merchant_page, order.merchant.user)
    for path in ("/merchant/", "/merchant/orders/", f"/merchant/orders/{order.pk}/", "/merchant/money/"):
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
