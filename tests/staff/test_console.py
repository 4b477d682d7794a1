"""The staff console: counts and oldest age per queue match the queues, each queue page lists and
filters its rows, the console's own actions go through the owning app's services, and nobody without
a verified staff session gets in."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Alert, AuditEntry
from accounts.services import alert_raise
from escrow import services as escrow_services
from escrow import withdrawals
from escrow.models import Withdrawal, WithdrawalStatus
from shop import services as shop_services
from shop.models import Merchant, MerchantStatus
from tests import factories
from tests.disputes.test_staff_pages import escalated

pytestmark = pytest.mark.django_db


def pending_merchant(name):
    return shop_services.merchant_create(user=factories.user_create(), name=name, now=timezone.now())


def count_of(html: str, slug: str) -> int:
    return int(re.search(rf'data-testid="count-{slug}">(\d+)<', html).group(1))


@pytest.fixture
def staff_client(client):
    factories.login_verified(client, factories.user_create(is_staff=True))
    return client


def test_only_a_verified_staff_session_gets_in(client):
    assert client.get("/staff/").status_code == 302  # to the sign-in page
    client.force_login(factories.user_create())
    assert client.get("/staff/").status_code == 302
    staff = factories.user_create(is_staff=True)
    client.force_login(staff)  # a password alone: no second factor yet
    response = client.get("/staff/")
    assert response.status_code == 302 and "/account/security/" in response.url
    factories.login_verified(client, staff)
    assert client.get("/staff/").status_code == 200


def test_counts_match_the_queues_and_each_item_can_be_acted_on(staff_client, run_on_commit, settings):
    settings.WITHDRAWAL_MINIMUM = 1
    settings.RESERVE_PERCENT = 0
    first, second = pending_merchant("Alpha Keys"), pending_merchant("Beta Codes")
    dispute = escalated(run_on_commit)
    alert_raise(key="recon:test:1", kind="reconciliation", message="Clearing is off by ¥1.00", now=timezone.now())
    merchant = dispute.order.merchant
    with run_on_commit():
        order = factories.order_delivered(product=factories.product_create(merchant=merchant))
    escrow_services.order_confirm_receipt(order=order, now=timezone.now())
    account = factories.payout_account_create(merchant=merchant)
    device = factories.totp_device_create(user=merchant.user)
    withdrawal = withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=account.pk,
        amount=100,
        currency="CNY",
        code=factories.totp_code(device),
        now=timezone.now(),
    )

    html = staff_client.get("/staff/").content.decode()
    assert count_of(html, "merchants") == 2
    assert count_of(html, "disputes") == 1
    assert count_of(html, "alerts") == 1
    assert count_of(html, "held-orders") == 0
    assert count_of(html, "withdrawals") == Withdrawal.objects.filter(status=WithdrawalStatus.REQUESTED).count() == 1
    assert 'data-queue="risk"' in html  # the slot the risk queue goes into

    # Merchants: filter, approve one, reject the other with a reason.
    page = staff_client.get("/staff/queues/merchants/", {"q": "beta"}).content.decode()
    assert f'data-row="{second.pk}"' in page and f'data-row="{first.pk}"' not in page
    staff_client.post(f"/staff/merchants/{first.pk}/approve/")
    assert staff_client.post(f"/staff/merchants/{second.pk}/reject/", {"reason": ""}).status_code == 302
    assert Merchant.objects.get(pk=second.pk).status == MerchantStatus.PENDING  # no reason, nothing changed
    staff_client.post(f"/staff/merchants/{second.pk}/reject/", {"reason": "No contact given"})
    assert Merchant.objects.get(pk=first.pk).status == MerchantStatus.APPROVED
    assert Merchant.objects.get(pk=second.pk).status == MerchantStatus.REJECTED

    # Disputes: the queue links the existing arbitration page.
    page = staff_client.get("/staff/queues/disputes/").content.decode()
    assert f'href="/staff/disputes/{dispute.pk}/"' in page

    # Withdrawals: the pay-out page is linked; rejecting voids the hold.
    page = staff_client.get("/staff/queues/withdrawals/").content.decode()
    assert f'href="/staff/withdrawals/{withdrawal.pk}/approve/"' in page
    staff_client.post(f"/staff/withdrawals/{withdrawal.pk}/reject/", {"note": "Wrong account"})
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == WithdrawalStatus.REJECTED

    # Alerts: acknowledged once, with an audit line.
    alert = Alert.objects.get()
    staff_client.post(f"/staff/alerts/{alert.pk}/acknowledge/")
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None
    assert AuditEntry.objects.filter(action="alert.acknowledged", subject_id=str(alert.pk)).count() == 1

    html = staff_client.get("/staff/").content.decode()
    for slug in ("merchants", "withdrawals", "alerts"):
        assert count_of(html, slug) == 0


def test_an_unknown_queue_is_404(staff_client):
    assert staff_client.get("/staff/queues/nothing/").status_code == 404


def test_the_actions_need_post(staff_client):
    merchant = pending_merchant("Gamma")
    assert staff_client.get(f"/staff/merchants/{merchant.pk}/approve/").status_code == 405
    assert Merchant.objects.get(pk=merchant.pk).status == MerchantStatus.PENDING


def queue_page_count(client, slug: str) -> int:
    html = client.get(f"/staff/queues/{slug}/").content.decode()
    return int(re.search(r'data-testid="queue-count">(\d+)<', html).group(1))


def test_the_risk_review_queue_is_in_the_console_with_its_count_oldest_age_and_the_review_page(staff_client):
    import risk
    from risk.selectors import review_items_open
    from risk.services import review_decide

    now = timezone.now()
    oldest = risk.review_open(
        kind="order",
        subject_id=41,
        email="carder@example.com",
        reasons=[{"rule": 7, "signal": "emails.device.1d", "value": 6, "threshold": 4}],
        now=now - timedelta(hours=5),
    )
    risk.review_open(kind="withdrawal", subject_id=42, now=now - timedelta(hours=1))
    risk.review_open(kind="dispute", subject_id=43, now=now)
    frozen = risk.review_open(kind="user", subject_id=44, email="frozen@example.com", now=now)
    risk.review_open(kind="order", subject_id=41, now=now)  # the same subject again: still one item
    review_decide(item_pk=frozen.pk, approve=True, staff=factories.user_create(is_staff=True), now=now)

    html = staff_client.get("/staff/").content.decode()
    assert count_of(html, "risk") == review_items_open().count() == 3
    card = html[html.index('data-queue="risk"') :]
    card = card[: card.index("</li>")]
    assert "oldest waiting 5\xa0hours" in card
    assert 'href="/staff/risk/review/"' in card and 'href="/staff/queues/risk/"' in card
    assert "Coming with the risk engine" not in html  # the placeholder is gone

    page = staff_client.get("/staff/queues/risk/").content.decode()
    assert f'data-row="{oldest.pk}"' in page and f'data-row="{frozen.pk}"' not in page
    assert "emails.device.1d" in page and f'href="/staff/risk/review/#item-{oldest.pk}"' in page
    only_orders = staff_client.get("/staff/queues/risk/", {"q": "order"}).content.decode()
    assert only_orders.count("data-row=") == 1
    by_email = staff_client.get("/staff/queues/risk/", {"q": "carder@"}).content.decode()
    assert f'data-row="{oldest.pk}"' in by_email and by_email.count("data-row=") == 1
    assert f'id="item-{oldest.pk}"' in staff_client.get("/staff/risk/review/").content.decode()


def test_every_count_on_the_console_matches_its_queue(staff_client):
    import risk
    from shop.models import Category
    from staff.selectors import QUEUES

    pending_merchant("Waiting Shop")
    sensitive = Category.objects.create(slug="sensitive", name="Sensitive", is_sensitive=True)
    factories.product_create(category=sensitive)
    factories.product_create(category=sensitive)
    risk.review_open(kind="user", subject_id=7, now=timezone.now())
    alert_raise(key="recon:test:2", kind="reconciliation", message="Off by ¥2.00", now=timezone.now())

    html = staff_client.get("/staff/").content.decode()
    counts = {queue.slug: count_of(html, queue.slug) for queue in QUEUES}
    assert counts == {queue.slug: queue_page_count(staff_client, queue.slug) for queue in QUEUES}
    assert counts == {queue.slug: queue.rows(q="", now=timezone.now()).count() for queue in QUEUES}
    assert (counts["merchants"], counts["products"], counts["risk"], counts["alerts"]) == (1, 2, 1, 1)


def test_deciding_a_held_order_or_paying_a_withdrawal_returns_to_the_consoles_queue(
    staff_client, run_on_commit, settings
):
    settings.WITHDRAWAL_MINIMUM = 1
    settings.RESERVE_PERCENT = 0
    placed = factories.order_place(product=factories.product_create(stock=2, price=10000))
    with run_on_commit():
        factories.pay(placed.order, amount="101.50")  # overpaid: held for review
    with run_on_commit():
        response = staff_client.post(f"/staff/orders/{placed.order.pk}/review/", {"decision": "approve"})
    assert response.status_code == 302 and response["Location"] == "/staff/queues/held-orders/"

    merchant = placed.order.merchant
    with run_on_commit():
        order = factories.order_delivered(product=factories.product_create(merchant=merchant))
    escrow_services.order_confirm_receipt(order=order, now=timezone.now())
    device = factories.totp_device_create(user=merchant.user)
    withdrawal = withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=factories.payout_account_create(merchant=merchant).pk,
        amount=100,
        currency="CNY",
        code=factories.totp_code(device),
        now=timezone.now(),
    )
    response = staff_client.post(
        f"/staff/withdrawals/{withdrawal.pk}/approve/", {"payout_reference": "BANK-1", "confirm": "on"}
    )
    assert response.status_code == 302 and response["Location"] == "/staff/queues/withdrawals/"
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == WithdrawalStatus.PAID
