"""A buyer signs up in a real browser, verifies the e-mail by the mailed link, buys a key through the
sandbox pay page, sees the purchase and the sign-in on the security page, and downloads the activity file."""

import csv
import io
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from accounts.models import User
from escrow.models import Order, OrderStatus
from tests import factories
from tests.accounts.helpers import PASSWORD, link_in, mails

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_up_verify_buy_and_download_the_activity(page, artifacts):
    factories.product_create(stock=2, price=5000, title="Game Card ¥50")

    page.goto("/")
    page.get_by_test_id("signup-link").click()
    page.get_by_label("E-mail address").fill("shopper@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/account/security/$"))
    expect(page.get_by_test_id("email-unverified")).to_be_visible()

    # The verification e-mail (locmem: the live server runs in this process) carries a signed link.
    [message] = mails("account.verify_email")
    assert message.to == ["shopper@example.com"]
    page.goto(link_in(message, "/accounts/verify/"))
    page.wait_for_url(re.compile(r"/account/security/$"))
    expect(page.get_by_test_id("email-verified")).to_be_visible()
    user = User.objects.get(email="shopper@example.com")
    assert user.is_email_verified

    page.goto("/")
    page.get_by_role("link", name="Game Card ¥50").click()
    expect(page.get_by_label("E-mail for your receipt and order link")).to_have_value("shopper@example.com")
    page.get_by_role("button", name="Check out").click()
    page.wait_for_url(re.compile(r"/payments/sandbox/pay/"))
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(re.compile(r"/orders/\d+/"))
    page.get_by_test_id("key").wait_for(timeout=5000)
    order = Order.objects.get(buyer=user)
    assert order.status == OrderStatus.DELIVERED

    page.get_by_test_id("security-link").click()
    page.wait_for_url(re.compile(r"/account/security/$"))
    activity = page.get_by_test_id("activity")
    expect(activity).to_contain_text(f"order {order.pk}")
    expect(page.get_by_test_id("sign-ins")).to_contain_text("Sign-up")
    expect(page.get_by_test_id("sign-ins")).to_contain_text("127.0.0.1")
    page.screenshot(path=str(artifacts / "security-page.png"), full_page=True)

    with page.expect_download() as download_info:
        page.get_by_test_id("activity-download").click()
    download = download_info.value
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    sections = {(row["section"], row["reference"]) for row in rows}
    assert ("order", f"order {order.pk}") in sections
    assert ("key_reveal", f"order {order.pk}") in sections
    assert any(row["section"] == "sign_in" and row["reference"] == "signup" for row in rows)
    reveal = next(row for row in rows if row["section"] == "key_reveal")
    assert reveal["ip"] == "127.0.0.1" and reveal["device"]  # the browser's device cookie
