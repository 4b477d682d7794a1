"""The staff arbitration pages: the queue, one dispute's page with the shop's evidence, the decision and
the question, each behind a staff session that passed a second factor."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts.models import AuditAction, AuditEntry
from disputes import services
from disputes.models import Dispute, DisputeStatus
from escrow.ledger_checks import ledger_problems
from escrow.models import OrderStatus
from tests import factories
from tests.disputes.helpers import delivered, everything

pytestmark = pytest.mark.django_db

UA = "Mozilla/5.0 (EvidenceTest; Pixel 7)"


def escalated(run_on_commit, *, now=None, reveal=True, **kwargs) -> Dispute:
    """A delivered order whose keys the buyer revealed, disputed, contested and escalated at `now`."""
    now = now or timezone.now()
    order = delivered(run_on_commit, **kwargs)
    if reveal:
        response = Client().get(
            f"/api/v1/orders/{order.pk}/keys/", HTTP_X_ORDER_TOKEN=order.access_token, HTTP_USER_AGENT=UA
        )
        assert response.status_code == 200, response.content
    with run_on_commit():
        dispute = services.dispute_open(
            order_pk=order.pk, reason="key_invalid", statement="The key <b>never</b> worked.", now=now
        )
        services.dispute_contest(dispute_pk=dispute.pk, statement="It worked when sent.", now=now)
        services.dispute_escalate(dispute_pk=dispute.pk, now=now)
    dispute.refresh_from_db()
    dispute.order.access_token = order.access_token
    return dispute


def staff() -> tuple[Client, object]:
    user = factories.user_create(is_staff=True)
    client = Client()
    factories.login_verified(client, user)
    return client, user


def test_the_queue_puts_the_closest_deadline_first_and_flags_overdue_ones(run_on_commit, settings):
    settings.DISPUTE_ARBITRATION_HOURS = 72
    start = timezone.now()
    later = escalated(run_on_commit, now=start)
    earlier = escalated(run_on_commit, now=start - timedelta(hours=10))
    client, _ = staff()

    page = client.get("/staff/disputes/").content.decode()
    order = [int(pk) for pk in re.findall(r'data-dispute="(\d+)"', page)]
    assert order == [earlier.pk, later.pk]
    assert 'class="overdue"' not in page

    # 63 hours on, the earlier one (deadline start+62h) is overdue, the later (start+72h) is not.
    with time_machine.travel(start + timedelta(hours=63)):
        page = client.get("/staff/disputes/").content.decode()
    rows = re.findall(r'<tr class="(overdue|)" data-dispute="(\d+)"', page)
    assert rows == [("overdue", str(earlier.pk)), ("", str(later.pk))]


def test_the_page_shows_both_sides_and_the_shops_evidence(run_on_commit):
    dispute = escalated(run_on_commit)
    client, _ = staff()
    page = client.get(f"/staff/disputes/{dispute.pk}/").content.decode()
    assert "The key &lt;b&gt;never&lt;/b&gt; worked." in page  # escaped
    assert "It worked when sent." in page  # the merchant's contest, in the thread
    assert UA in page and "127.0.0.1" in page  # the reveal: device and address
    assert "1 disputes over 1 delivered orders (100.0%)" in page
    assert dispute.order.email in page
    # The split preview for 50% of ¥100.00: refund ¥50.00.
    assert "¥50.00" in page


@pytest.mark.parametrize(
    ("form", "outcome", "order_status"),
    [
        ({"outcome": "refund"}, "refunded", OrderStatus.REFUNDED),
        ({"outcome": "release"}, "released", OrderStatus.COMPLETED),
        ({"outcome": "split", "buyer_percent": "30"}, "split", None),
    ],
)
def test_a_decision_through_the_page_moves_the_money_once_and_is_audited(run_on_commit, form, outcome, order_status):
    dispute = escalated(run_on_commit)
    client, user = staff()
    with run_on_commit():
        response = client.post(
            f"/staff/disputes/{dispute.pk}/decide/", {**form, "reason": "The reveal log says so.", "confirm": "on"}
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    dispute.refresh_from_db()
    assert (dispute.status, dispute.outcome, dispute.decided_by_id) == (DisputeStatus.RESOLVED, outcome, user.pk)
    assert dispute.decision_reason == "The reveal log says so."
    if outcome == "split":
        assert dispute.buyer_percent == 30
    if order_status:
        dispute.order.refresh_from_db()
        assert dispute.order.status == order_status
    entry = AuditEntry.objects.get(action=AuditAction.DISPUTE_RESOLVED, subject_id=str(dispute.pk))
    assert entry.actor_id == user.pk and entry.data["reason"] == "The reveal log says so."
    assert ledger_problems() == []
    # Both parties see the reason: it is on the page and in the thread.
    assert "The reveal log says so." in client.get(f"/staff/disputes/{dispute.pk}/").content.decode()
    # A second decision is refused and moves nothing.
    before = everything()
    again = client.post(f"/staff/disputes/{dispute.pk}/decide/", {"outcome": "refund", "reason": "x", "confirm": "on"})
    assert again.status_code == 400
    assert everything() == before


@pytest.mark.parametrize(
    "form",
    [
        {"outcome": "refund", "reason": "", "confirm": "on"},  # reason required
        {"outcome": "refund", "reason": "   ", "confirm": "on"},
        {"outcome": "refund", "reason": "Because."},  # the "this moves money" confirmation
        {"outcome": "split", "reason": "Because.", "confirm": "on"},  # split without a percentage
        {"outcome": "split", "buyer_percent": "101", "reason": "Because.", "confirm": "on"},
        {"outcome": "everything", "reason": "Because.", "confirm": "on"},
    ],
)
def test_a_bad_decision_is_refused_with_a_form_error_and_moves_nothing(run_on_commit, form):
    dispute = escalated(run_on_commit)
    client, _ = staff()
    before = everything()
    response = client.post(f"/staff/disputes/{dispute.pk}/decide/", form)
    assert response.status_code == 400
    assert "errorlist" in response.content.decode()
    assert everything() == before


def test_a_staff_session_without_a_second_factor_is_refused(run_on_commit):
    dispute = escalated(run_on_commit)
    client = Client()
    client.force_login(factories.user_create(is_staff=True))
    before = everything()
    for url in (
        "/staff/disputes/",
        f"/staff/disputes/{dispute.pk}/",
        f"/staff/disputes/{dispute.pk}/evidence.zip",
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/account/security/" in response["Location"], url
    response = client.post(
        f"/staff/disputes/{dispute.pk}/decide/", {"outcome": "refund", "reason": "Because.", "confirm": "on"}
    )
    assert response.status_code == 302 and "/account/security/" in response["Location"]
    response = client.post(f"/staff/disputes/{dispute.pk}/ask/", {"question_for": "buyer", "body": "Why?"})
    assert response.status_code == 302
    assert everything() == before


def test_a_question_restarts_the_asked_partys_clock(run_on_commit, settings):
    settings.DISPUTE_MERCHANT_HOURS = 48
    start = timezone.now()
    order = delivered(run_on_commit)
    with run_on_commit():
        dispute = services.dispute_open(order_pk=order.pk, reason="key_invalid", statement="Broken.", now=start)
    client, user = staff()
    later = start + timedelta(hours=30)
    with time_machine.travel(later, tick=False), run_on_commit():
        response = client.post(f"/staff/disputes/{dispute.pk}/ask/", {"question_for": "merchant", "body": "Proof?"})
    assert response.status_code == 302
    dispute.refresh_from_db()
    assert dispute.deadline == later + timedelta(hours=48)
    assert AuditEntry.objects.filter(
        action=AuditAction.DISPUTE_QUESTION_ASKED, subject_id=str(dispute.pk), actor=user
    ).exists()
    assert dispute.messages.filter(question_for="merchant", body="Proof?").exists()
    # A question with no body is refused and changes nothing.
    before = everything()
    response = client.post(f"/staff/disputes/{dispute.pk}/ask/", {"question_for": "buyer", "body": ""})
    assert response.status_code == 400 and "errorlist" in response.content.decode()
    assert everything() == before


def test_strangers_get_404_or_the_sign_in_page_and_nothing_moves(run_on_commit):
    dispute = escalated(run_on_commit)
    buyer = Client()
    buyer.force_login(factories.user_create())
    merchant = Client()
    factories.login_verified(merchant, dispute.order.merchant.user)
    staff_client, _ = staff()
    before = everything()
    pages = [
        ("get", "/staff/disputes/"),
        ("get", f"/staff/disputes/{dispute.pk}/"),
        ("get", f"/staff/disputes/{dispute.pk}/evidence.zip"),
        ("post", f"/staff/disputes/{dispute.pk}/decide/"),
        ("post", f"/staff/disputes/{dispute.pk}/ask/"),
    ]
    for client in (Client(), buyer, merchant):
        for method, url in pages:
            response = getattr(client, method)(url, {"outcome": "refund", "reason": "x", "confirm": "on"})
            # staff_member_required sends non-staff to the admin sign-in page: never the dispute.
            assert response.status_code == 302 and "/admin/login/" in response["Location"], (url, response.status_code)
    assert staff_client.get("/staff/disputes/999999/").status_code == 404
    assert staff_client.get("/staff/disputes/999999/evidence.zip").status_code == 404
    assert everything() == before


def test_the_pages_read_in_simplified_chinese(run_on_commit):
    dispute = escalated(run_on_commit)
    client, _ = staff()
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert "待仲裁的纠纷" in client.get("/staff/disputes/").content.decode()
    page = client.get(f"/staff/disputes/{dispute.pk}/").content.decode()
    assert "商店自己的证据" in page and "我明白此操作会转移资金且无法撤销。" in page
