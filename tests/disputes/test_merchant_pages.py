"""The merchant's dispute pages and the buyer's answers to them, through the test client: a merchant with
a verified session replaces, refunds or contests (with screenshots); the buyer accepts, reopens once or
escalates, by the token link or signed in."""

import io
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from disputes import services
from disputes.models import DisputeOutcome, DisputeStatus, MessageRole
from escrow.models import OrderStatus
from tests import factories
from tests.disputes.helpers import opened

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _files_root(settings, tmp_path):
    settings.DISPUTE_FILES_ROOT = tmp_path / "dispute-files"


def webp() -> SimpleUploadedFile:
    out = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 200, 0)).save(out, format="WEBP")
    return SimpleUploadedFile("proof.webp", out.getvalue())


def merchant_client(dispute) -> Client:
    client = Client()
    factories.login_verified(client, dispute.order.merchant.user)
    return client


def act(dispute, action: str) -> str:
    return reverse("merchant_disputes:act", kwargs={"pk": dispute.pk, "action": action})


def guest_act(dispute, token: str, action: str) -> str:
    return reverse("disputes:act_guest", kwargs={"order_pk": dispute.order_id, "token": token, "action": action})


def guest_page(dispute, token: str) -> str:
    return reverse("disputes:order_dispute_guest", kwargs={"pk": dispute.order_id, "token": token})


def test_the_merchant_area_needs_a_verified_session(run_on_commit):
    dispute = opened(run_on_commit)
    client = Client()
    client.force_login(dispute.order.merchant.user)  # signed in, no second factor yet
    for url in (reverse("merchant_disputes:list"), reverse("merchant_disputes:detail", kwargs={"pk": dispute.pk})):
        assert client.get(url).status_code == 302
    assert client.post(act(dispute, "refund")).status_code == 302
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.OPEN


def test_the_list_shows_the_merchants_disputes_nearest_deadline_first(run_on_commit):
    merchant = factories.merchant_create()
    now = timezone.now()
    disputes = []
    for opened_at in (now, now - timedelta(hours=5)):
        product = factories.product_create(merchant=merchant, stock=1)
        with run_on_commit():
            order = factories.order_place(product=product).order
            factories.pay(order)
        disputes.append(services.dispute_open(order_pk=order.pk, reason="other", statement="Broken.", now=opened_at))
    later, sooner = disputes
    someone_elses = opened(run_on_commit)
    page = merchant_client(later).get(reverse("merchant_disputes:list"))
    assert page.status_code == 200
    assert [d.pk for d in page.context["disputes"]] == [sooner.pk, later.pk]
    assert someone_elses.pk not in [d.pk for d in page.context["disputes"]]


def test_the_merchant_replaces_and_the_guest_buyer_accepts(run_on_commit):
    dispute = opened(run_on_commit)
    token = dispute.order.access_token
    merchant = merchant_client(dispute)
    page = merchant.get(reverse("merchant_disputes:detail", kwargs={"pk": dispute.pk}))
    assert page.status_code == 200 and 'data-testid="replace"' in page.content.decode()
    assert merchant.post(act(dispute, "replace")).status_code == 302
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.REPLACED
    guest = Client()
    page = guest.get(guest_page(dispute, token))
    assert 'data-testid="accept"' in page.content.decode()
    assert guest.post(guest_act(dispute, token, "accept")).status_code == 302
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.RESOLVED and dispute.outcome == DisputeOutcome.RELEASED


def test_the_buyer_reopens_once_then_escalates(run_on_commit):
    dispute = opened(run_on_commit)
    token = dispute.order.access_token
    merchant = merchant_client(dispute)
    merchant.post(act(dispute, "replace"))
    guest = Client()
    guest.post(guest_act(dispute, token, "reopen"), {"statement": "The new key fails too."})
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.OPEN and dispute.reopen_count == 1
    merchant.post(act(dispute, "replace"))
    page = guest.get(guest_page(dispute, token))
    assert 'data-testid="reopen"' not in page.content.decode()  # once only
    refused = guest.post(guest_act(dispute, token, "reopen"), {"statement": "Again."}, follow=True)
    assert refused.status_code == 200
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.REPLACED and dispute.reopen_count == 1
    guest.post(guest_act(dispute, token, "escalate"))
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.ESCALATED


def test_the_merchant_contests_with_a_screenshot_and_the_signed_in_buyer_answers(run_on_commit):
    buyer = factories.user_create()
    dispute = opened(run_on_commit, buyer=buyer)
    merchant = merchant_client(dispute)
    response = merchant.post(
        act(dispute, "contest"), {"statement": "The key was redeemed by the buyer.", "screenshots": [webp()]}
    )
    assert response.status_code == 302
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.CONTESTED
    (item,) = dispute.attachments.all()
    assert item.role == MessageRole.MERCHANT and item.content_type == "image/webp"
    client = Client()
    client.force_login(buyer)
    page = client.get(reverse("disputes:detail", kwargs={"pk": dispute.pk}))
    assert "The key was redeemed by the buyer." in page.content.decode()
    served = client.get(reverse("disputes:attachment", kwargs={"pk": dispute.pk, "attachment_pk": item.pk}))
    assert served.status_code == 200 and served["Content-Type"] == "image/webp"
    client.post(reverse("disputes:act", kwargs={"pk": dispute.pk, "action": "message"}), {"body": "I never used it."})
    dispute.refresh_from_db()
    assert dispute.buyer_answered and dispute.messages.filter(role=MessageRole.BUYER).exists()


def test_the_merchant_refunds_the_whole_order(run_on_commit):
    dispute = opened(run_on_commit, quantity=2)
    merchant_client(dispute).post(act(dispute, "refund"), {"full": "1"})
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.RESOLVED and dispute.outcome == DisputeOutcome.REFUNDED
    assert dispute.order.__class__.objects.get(pk=dispute.order_id).status == OrderStatus.REFUNDED


def test_a_contest_with_a_bad_screenshot_is_refused_and_changes_nothing(run_on_commit):
    dispute = opened(run_on_commit)
    fake = SimpleUploadedFile("proof.webp", b"GIF89a not really", content_type="image/webp")
    response = merchant_client(dispute).post(
        act(dispute, "contest"), {"statement": "No.", "screenshots": [fake]}, follow=True
    )
    assert "proof.webp is not a PNG, JPEG or WebP image" in response.content.decode()
    dispute.refresh_from_db()
    assert dispute.status == DisputeStatus.OPEN and not dispute.messages.exists() and not dispute.attachments.exists()
