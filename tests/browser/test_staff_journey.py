"""Issue 14: a staff member's journey in Chromium, on a desktop and on a phone (390x844): sign in with the
second factor, the console's counts match its queues (one item waiting in each), then one item of each
queue is acted on from the console (approve the merchant, approve the product awaiting review, approve
the held order, decide the risk review item on risk's page, decide the dispute on its arbitration page,
pay or reject the withdrawal, acknowledge the alert) and each count drops to zero.
Screenshots of each step go to test-artifacts/ (kept by CI)."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

import risk
from accounts.models import Alert
from accounts.services import alert_raise
from disputes.models import DisputeOutcome, DisputeStatus
from escrow import services as escrow_services
from escrow import withdrawals
from escrow.models import Order, OrderStatus, Withdrawal, WithdrawalStatus
from shop import services as shop_services
from shop.models import Category, Merchant, MerchantStatus, Product, ProductStatus
from staff.selectors import BY_SLUG, QUEUES
from tests import factories
from tests.disputes.test_staff_pages import escalated

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
SLUGS = ["merchants", "products", "held-orders", "risk", "disputes", "withdrawals", "alerts"]


def one_in_each_queue(run_on_commit):
    """A merchant awaiting approval, an overpaid order held for review, an escalated dispute, a
    withdrawal request and a reconciliation alert, each through the owning app's services."""
    now = timezone.now()
    pending = shop_services.merchant_create(user=factories.user_create(), name="Alpha Keys", now=now)
    product = factories.product_create(stock=3, price=10000, title="Held Card")
    placed = factories.order_place(product=product)
    with run_on_commit():
        assert factories.pay(placed.order, amount="101.50").status_code == 200  # ¥1.50 too much: held
    held = Order.objects.get(pk=placed.order.pk)
    assert held.status == OrderStatus.HELD_FOR_REVIEW
    dispute = escalated(run_on_commit)
    merchant = factories.merchant_create(name="Payout Shop")
    with run_on_commit():
        sold = factories.order_delivered(product=factories.product_create(merchant=merchant))
    escrow_services.order_confirm_receipt(order=sold, now=now)
    device = factories.totp_device_create(user=merchant.user)
    withdrawal = withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=factories.payout_account_create(merchant=merchant).pk,
        amount=5000,
        currency="CNY",
        code=factories.totp_code(device),
        now=now,
    )
    alert_raise(key="recon:journey:1", kind="reconciliation", message="Clearing is off by ¥1.00", now=now)
    sensitive = Category.objects.create(slug="journey-sensitive", name="Sensitive", is_sensitive=True)
    waiting = factories.product_create(title="Reviewed Card", category=sensitive)
    assert waiting.status == ProductStatus.AWAITING_REVIEW
    frozen = factories.user_create(email="frozen@example.com")
    item = risk.review_open(kind="user", subject_id=frozen.pk, email=frozen.email, now=now)
    return pending, waiting, held, item, dispute, withdrawal, Alert.objects.get()


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_staff_see_counts_that_match_the_queues_and_clear_one_item_of_each(
    device, chromium, live_server, settings, artifacts, sign_in, run_on_commit
):
    settings.ALLOWED_HOSTS = ["*"]
    settings.WITHDRAWAL_MINIMUM = 1
    settings.RESERVE_PERCENT = 0
    pending, waiting_product, held, item, dispute, withdrawal, alert = one_in_each_queue(run_on_commit)
    staff = factories.user_create(is_staff=True)

    context = chromium.new_context(base_url=live_server.url, viewport=VIEWPORTS[device])
    page = context.new_page()
    page.set_default_timeout(10_000)
    shot = lambda name: page.screenshot(path=str(artifacts / f"staff-{device}-{name}.png"), full_page=True)  # noqa: E731

    def console_counts() -> dict[str, int]:
        page.goto("/staff/")
        return {slug: int(page.get_by_test_id(f"count-{slug}").inner_text()) for slug in SLUGS}

    def open_queue(slug: str) -> None:
        """From the console (the current page), into a queue: it lists as many rows as the console said."""
        said = int(page.get_by_test_id(f"count-{slug}").inner_text())
        page.locator(f"[data-queue={slug}] h2 a").click()
        page.wait_for_url(re.compile(rf"/staff/queues/{slug}/$"))
        expect(page.get_by_test_id("queue-count")).to_have_text(str(said))
        expect(page.get_by_test_id("queue").locator("tbody tr[data-row]")).to_have_count(said)
        _no_sideways_scroll(page)

    waiting = {slug: BY_SLUG[slug].rows(q="", now=timezone.now()).count() for slug in SLUGS}
    assert set(waiting.values()) == {1} or waiting["risk"] == 2, waiting  # the held order may be risk's too

    def cleared(slug: str) -> None:
        """Back on the console: this queue's count dropped to zero, the others did not move."""
        waiting[slug] = 0
        if slug == "held-orders":  # a held order is risk's review item too, and leaves the queue with it
            waiting["risk"] = 1
        assert console_counts() == waiting

    try:
        sign_in(page, staff)

        # The console: one waiting in each queue (each queue's page is checked against it on the way).
        assert console_counts() == waiting
        assert [queue.slug for queue in QUEUES] == SLUGS  # a queue added later must join this journey
        _no_sideways_scroll(page)
        shot("1-console")

        # Merchants: approve from the queue.
        open_queue("merchants")
        shot("2-merchants")
        page.get_by_test_id(f"approve-{pending.pk}").click()
        page.get_by_text("Alpha Keys is approved.").wait_for()
        assert Merchant.objects.get(pk=pending.pk).status == MerchantStatus.APPROVED
        cleared("merchants")

        # The product awaiting review: approve and list it.
        open_queue("products")
        page.get_by_test_id(f"approve-product-{waiting_product.pk}").click()
        page.get_by_text("Reviewed Card is approved and listed.").wait_for()
        assert Product.objects.get(pk=waiting_product.pk).status == ProductStatus.ACTIVE
        cleared("products")

        # The held order: its review page, approve (the surplus goes back), back to the queue.
        open_queue("held-orders")
        page.get_by_test_id(f"review-{held.pk}").click()
        page.wait_for_url(re.compile(rf"/staff/orders/{held.pk}/review/$"))
        expect(page.locator("main")).to_contain_text("¥101.50")
        page.get_by_label("Approve: deliver the order").check()
        _no_sideways_scroll(page)
        shot("3-held-order")
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_url(re.compile(r"/staff/queues/held-orders/$"))
        page.get_by_text("The order is approved and being delivered.").wait_for()
        assert Order.objects.get(pk=held.pk).status == OrderStatus.DELIVERED
        cleared("held-orders")

        # The risk review item (a frozen account): decided on risk's own page, with a reason.
        open_queue("risk")
        page.get_by_test_id(f"risk-review-{item.pk}").click()
        section = page.locator(f"#item-{item.pk}")
        section.get_by_label("Decision").select_option("approve")
        section.get_by_label("Reason").fill("Known customer, verified by phone.")
        shot("3b-risk")
        section.get_by_role("button", name="Confirm").click()
        page.get_by_text(f"Review item {item.pk} decided.").wait_for()
        cleared("risk")

        # The dispute: its arbitration page, a full refund, decided.
        open_queue("disputes")
        page.get_by_test_id(f"arbitrate-{dispute.pk}").click()
        page.wait_for_url(re.compile(rf"/staff/disputes/{dispute.pk}/$"))
        page.get_by_label("Full refund to the buyer").check()
        page.get_by_label("Reason (shown to both parties)").fill("The merchant showed no working key.")
        page.get_by_label("I understand that this moves money and cannot be undone.").check()
        _no_sideways_scroll(page)
        shot("4-dispute")
        page.get_by_role("button", name="Decide: this moves money").click()
        page.get_by_text(f"Dispute {dispute.pk} is decided.").wait_for()
        dispute.refresh_from_db()
        assert (dispute.status, dispute.outcome) == (DisputeStatus.RESOLVED, DisputeOutcome.REFUNDED)
        cleared("disputes")

        # The withdrawal: paid out on the desktop (with the payout reference), rejected on the phone.
        open_queue("withdrawals")
        if device == "desktop":
            page.get_by_test_id(f"pay-{withdrawal.pk}").click()
            page.wait_for_url(re.compile(rf"/staff/withdrawals/{withdrawal.pk}/approve/$"))
            expect(page.get_by_test_id("payout-details")).to_contain_text("6222000011112222")
            page.get_by_label("Reference of the payment you made (from the bank or wallet)").fill("ICBC-20260101-7")
            page.get_by_label("I paid exactly this amount to exactly this account.").check()
            shot("5-withdrawal")
            page.get_by_role("button", name="Mark paid").click()
            page.wait_for_url(re.compile(r"/staff/queues/withdrawals/$"))
            page.get_by_text(f"Withdrawal {withdrawal.pk} is marked paid.").wait_for()
            decided = WithdrawalStatus.PAID
        else:
            page.get_by_label("Note").fill("Wrong account holder")
            shot("5-withdrawal")
            page.get_by_test_id(f"reject-{withdrawal.pk}").click()
            page.get_by_text(f"Withdrawal {withdrawal.pk} is rejected").wait_for()
            decided = WithdrawalStatus.REJECTED
        assert Withdrawal.objects.get(pk=withdrawal.pk).status == decided
        cleared("withdrawals")

        # The alert: acknowledged.
        open_queue("alerts")
        page.get_by_test_id(f"ack-{alert.pk}").click()
        page.get_by_text("Alert acknowledged.").wait_for()
        alert.refresh_from_db()
        assert alert.acknowledged_at is not None
        cleared("alerts")
        shot("6-console-clear")
    finally:
        context.close()


def _no_sideways_scroll(page) -> None:
    """The page is no wider than the screen (a phone must not scroll sideways)."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
