"""The whole dispute story in Chromium, each party in its own browser: a guest disputes on a phone, the
merchant contests, the guest asks staff, staff split 60/40; a screenshot of each party's page is kept
in test-artifacts/."""

import re
from decimal import ROUND_HALF_UP, Decimal

import pytest
from PIL import Image
from playwright.sync_api import expect

from accounts.models import AuditAction, AuditEntry
from disputes.models import Dispute, DisputeOutcome, DisputeStatus
from escrow.ledger_checks import ledger_problems
from escrow.models import OrderStatus, Refund
from tests import factories
from tests.disputes.helpers import delivered

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
BUYER_AGENT = "Mozilla/5.0 (Linux; Android 14; Pixel 8) DisputeStoryBuyer"
PRICE = 12341  # 60% of it is 7404.6: the refund shows the half-up rounding (7405), not a truncation
TIMEOUT = 10_000


def _party(chromium, live_server, viewport, **options):
    context = chromium.new_context(base_url=live_server.url, viewport=viewport, **options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    return context, page


def _png(tmp_path):
    path = tmp_path / "activation-error.png"
    Image.new("RGB", (64, 40), (200, 30, 30)).save(path, format="PNG")
    return path


def test_a_guest_disputes_the_merchant_contests_and_staff_split_60_40(
    chromium, live_server, settings, sign_in, artifacts, tmp_path
):
    settings.ALLOWED_HOSTS = ["*"]
    settings.DISPUTE_FILES_ROOT = tmp_path / "dispute-files"

    # 1. Through the real services: a merchant's product paid by the signed sandbox webhook and delivered.
    order = delivered(price=PRICE, stock=3)
    merchant_user = order.merchant.user
    staff_user = factories.user_create(is_staff=True)
    factories.totp_device_create(user=merchant_user)
    factories.totp_device_create(user=staff_user)
    order_url = f"/orders/{order.pk}/t/{order.access_token}/"
    contexts = []
    try:
        # 2. The guest, on a phone: the order page reveals the key, then the dispute form.
        context, buyer = _party(chromium, live_server, PHONE, user_agent=BUYER_AGENT)
        contexts.append(context)
        buyer.goto(order_url)
        expect(buyer.get_by_test_id("key")).to_have_text(re.compile(r"^KEY-"))
        buyer.get_by_role("link", name="Report a problem with these keys").click()
        buyer.get_by_label("What is wrong?").select_option("key_invalid")
        buyer.get_by_label("Tell the merchant what happened").fill("The platform says this key is invalid.")
        buyer.get_by_label(re.compile(r"^Screenshots")).set_input_files(str(_png(tmp_path)))
        buyer.get_by_role("button", name="Open the dispute").click()
        expect(buyer.get_by_test_id("dispute-status")).to_have_text("Waiting for the merchant")
        expect(buyer.get_by_test_id("countdown")).to_have_text(re.compile(r"^\d+ h \d{2} min left$"))
        expect(buyer.get_by_test_id("attachments").get_by_role("link")).to_have_count(1)
        dispute_url = buyer.url
        buyer.screenshot(path=str(artifacts / "dispute-1-buyer-opened.png"), full_page=True)
        dispute = Dispute.objects.get(order=order)

        # 3. The merchant, on a desktop: signs in with a code, finds the dispute in the list, contests.
        context, merchant = _party(chromium, live_server, DESKTOP)
        contexts.append(context)
        sign_in(merchant, merchant_user)
        merchant.goto("/merchant/")
        merchant.get_by_role("navigation", name="Merchant area").get_by_role("link", name="Disputes").click()
        merchant.get_by_test_id("disputes").get_by_role("link", name=f"Order {order.pk}").click()
        expect(merchant.get_by_test_id("dispute-status")).to_have_text("Waiting for the merchant")
        merchant.get_by_label("Your statement").fill("The key was checked and worked when it was sent.")
        merchant.get_by_test_id("contest").click()
        expect(merchant.get_by_test_id("dispute-status")).to_have_text("Contested, waiting for the buyer")
        expect(merchant.get_by_test_id("thread")).to_contain_text("worked when it was sent")
        merchant.screenshot(path=str(artifacts / "dispute-2-merchant-contested.png"), full_page=True)

        # 4. The guest reloads, reads the merchant's answer and asks staff to decide.
        buyer.reload()
        expect(buyer.get_by_test_id("dispute-status")).to_have_text("Contested, waiting for the buyer")
        expect(buyer.get_by_test_id("thread")).to_contain_text("worked when it was sent")
        buyer.get_by_role("button", name="Ask staff to decide").click()
        expect(buyer.get_by_test_id("dispute-status")).to_have_text("With staff for arbitration")
        buyer.screenshot(path=str(artifacts / "dispute-3-buyer-escalated.png"), full_page=True)

        # 5. Staff, on a desktop: the queue, the dispute with the shop's evidence, a 60/40 split.
        context, staff = _party(chromium, live_server, DESKTOP)
        contexts.append(context)
        sign_in(staff, staff_user)
        staff.goto("/staff/disputes/")
        row = staff.locator(f"tr[data-dispute='{dispute.pk}']")
        expect(row).to_contain_text(order.product.title)
        row.get_by_role("link", name=f"Dispute {dispute.pk}").click()
        reveals = staff.locator("table.reveals")
        expect(reveals).to_contain_text(BUYER_AGENT)  # the guest's own reveal, recorded by the shop
        expect(reveals).to_contain_text("127.0.0.1")
        expect(staff.locator("blockquote.statement")).to_contain_text("The platform says this key is invalid.")
        staff.get_by_label("Split: the buyer gets a percentage").check()
        staff.get_by_label("The buyer's percentage (split only)").fill("60")
        staff.get_by_label("Reason (shown to both parties)").fill("The key was revealed once; we share the loss.")
        staff.get_by_label("I understand that this moves money and cannot be undone.").check()
        staff.get_by_role("button", name="Decide: this moves money").click()
        decision = staff.get_by_role("heading", name="Decision")
        expect(decision).to_be_visible()
        expect(staff.locator("h2:text-is('Decision') + p")).to_contain_text(
            "Split between buyer and merchant — the buyer gets 60%"
        )
        expect(staff.get_by_role("button", name="Decide: this moves money")).to_have_count(0)
        staff.screenshot(path=str(artifacts / "dispute-4-staff-decided.png"), full_page=True)

        # 6. The guest reloads and reads the outcome and staff's reason.
        buyer.goto(dispute_url)
        expect(buyer.get_by_test_id("dispute-status")).to_have_text("Resolved")
        expect(buyer.locator(".dispute-status")).to_contain_text("Split between buyer and merchant")
        expect(buyer.get_by_test_id("thread")).to_contain_text("The key was revealed once; we share the loss.")
        expect(buyer.get_by_test_id("countdown")).to_have_count(0)
        buyer.screenshot(path=str(artifacts / "dispute-5-buyer-outcome.png"), full_page=True)
    finally:
        for context in contexts:
            context.close()

    # 7. What the story left in the database.
    dispute.refresh_from_db()
    order.refresh_from_db()
    assert (dispute.status, dispute.outcome, dispute.buyer_percent) == (
        DisputeStatus.RESOLVED,
        DisputeOutcome.SPLIT,
        60,
    )
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    expected = int((Decimal(order.amount) * 60 / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert (order.amount, expected) == (PRICE, 7405)
    assert list(Refund.objects.filter(order=order).values_list("amount", flat=True)) == [expected]
    assert ledger_problems() == []
    entry = AuditEntry.objects.get(action=AuditAction.DISPUTE_RESOLVED, subject_id=str(dispute.pk))
    assert entry.actor == staff_user
