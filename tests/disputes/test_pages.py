"""The dispute pages through the Django test client: a guest by the order's token link, a signed-in
buyer, a merchant with a verified session; strangers get 404 everywhere; screenshots are checked,
re-encoded and served only to the parties."""

import io
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image

from disputes.models import Attachment, Dispute, DisputeMessage, DisputeStatus
from tests import factories
from tests.disputes.helpers import delivered, everything

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _files_root(settings, tmp_path):
    settings.DISPUTE_FILES_ROOT = tmp_path / "dispute-files"
    return settings.DISPUTE_FILES_ROOT


def png(name="shot.png", size=(40, 30)) -> SimpleUploadedFile:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, format="PNG")
    return SimpleUploadedFile(name, out.getvalue(), content_type="image/png")


def stored_files(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def guest_url(order, name="disputes:order_dispute_guest", **extra):
    return reverse(name, kwargs={"pk": order.pk, "token": order.access_token, **extra})


def open_form(**extra) -> dict:
    return {"reason": "key_invalid", "statement": "The key is refused by the platform.", **extra}


def merchant_client(order) -> Client:
    client = Client()
    factories.login_verified(client, order.merchant.user)
    return client


# --- opening from the order page ----------------------------------------------------------------------


def test_the_order_page_links_to_the_dispute_form_while_the_window_is_open(run_on_commit, client):
    order = delivered(run_on_commit)
    page = client.get(reverse("escrow:order_guest", kwargs={"pk": order.pk, "token": order.access_token}))
    assert guest_url(order) in page.content.decode()


def test_the_order_page_offers_no_dispute_once_the_window_closed(run_on_commit, client):
    order = delivered(run_on_commit)
    type(order).objects.filter(pk=order.pk).update(inspection_ends_at=order.paid_at)
    page = client.get(reverse("escrow:order_guest", kwargs={"pk": order.pk, "token": order.access_token}))
    assert 'data-testid="dispute-link"' not in page.content.decode()


def test_after_the_window_the_form_is_not_offered_and_a_post_is_refused(run_on_commit, client):
    order = delivered(run_on_commit)
    type(order).objects.filter(pk=order.pk).update(inspection_ends_at=order.paid_at)
    page = client.get(guest_url(order)).content.decode()
    assert 'data-testid="window-closed"' in page and 'data-testid="dispute-form"' not in page
    before = everything()
    response = client.post(guest_url(order), open_form())
    assert (
        response.status_code == 400 and "The inspection window of this order has closed." in response.content.decode()
    )
    assert everything() == before


def test_a_guest_opens_a_dispute_with_screenshots_and_follows_it_by_the_token_link(run_on_commit, client, _files_root):
    order = delivered(run_on_commit)
    assert client.get(guest_url(order)).status_code == 200
    response = client.post(guest_url(order), {**open_form(), "screenshots": [png("a.png"), png("b.png")]})
    assert response.status_code == 302
    dispute = Dispute.objects.get(order=order)
    assert dispute.status == DisputeStatus.OPEN
    assert dispute.attachments.count() == 2 and len(stored_files(_files_root)) == 2
    page = client.get(guest_url(order))
    text = page.content.decode()
    assert page.status_code == 200 and 'data-testid="countdown"' in text and "h " in text
    item = dispute.attachments.first()
    url = reverse(
        "disputes:attachment_guest",
        kwargs={"order_pk": order.pk, "token": order.access_token, "attachment_pk": item.pk},
    )
    served = client.get(url)
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Content-Disposition"].startswith("attachment;")
    assert Image.open(io.BytesIO(b"".join(served.streaming_content))).format == "PNG"


def test_a_signed_in_buyer_opens_naming_one_of_several_keys_and_lands_on_the_dispute_page(run_on_commit, client):
    buyer = factories.user_create()
    order = delivered(run_on_commit, quantity=2, buyer=buyer)
    client.force_login(buyer)
    form = client.get(reverse("disputes:order_dispute", kwargs={"pk": order.pk}))
    assert 'name="keys"' in form.content.decode()
    key_pk = form.context["form"].fields["keys"].choices[0][0]
    response = client.post(reverse("disputes:order_dispute", kwargs={"pk": order.pk}), open_form(keys=[key_pk]))
    dispute = Dispute.objects.get(order=order)
    assert list(dispute.keys.values_list("pk", flat=True)) == [key_pk]
    assert response.status_code == 302
    assert client.get(response.url).url == reverse("disputes:detail", kwargs={"pk": dispute.pk})
    page = client.get(reverse("disputes:detail", kwargs={"pk": dispute.pk}))
    assert page.status_code == 200 and "The key is refused by the platform." in page.content.decode()


def test_a_statement_over_2000_characters_is_refused_and_opens_nothing(run_on_commit, client):
    order = delivered(run_on_commit)
    before = everything()
    response = client.post(guest_url(order), open_form(statement="x" * 2001))
    assert response.status_code == 400
    assert everything() == before


# --- the upload refusals --------------------------------------------------------------------------------


def test_a_pdf_named_png_is_refused_with_a_clear_message_and_stores_nothing(run_on_commit, client, _files_root):
    order = delivered(run_on_commit)
    before = everything()
    fake = SimpleUploadedFile("shot.png", b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF\n", content_type="image/png")
    response = client.post(guest_url(order), {**open_form(), "screenshots": [png(), fake]})
    assert response.status_code == 400
    assert "shot.png is not a PNG, JPEG or WebP image" in response.content.decode()
    assert everything() == before and Attachment.objects.count() == 0 and stored_files(_files_root) == []


def test_a_6_mb_image_is_refused_and_stores_nothing(run_on_commit, client, _files_root):
    order = delivered(run_on_commit)
    out = io.BytesIO()
    Image.frombytes("RGB", (1500, 1400), os.urandom(1500 * 1400 * 3)).save(out, format="PNG", compress_level=0)
    assert out.tell() > 6_000_000
    before = everything()
    big = SimpleUploadedFile("big.png", out.getvalue(), content_type="image/png")
    response = client.post(guest_url(order), {**open_form(), "screenshots": [big]})
    assert response.status_code == 400 and "big.png is larger than 5 MB." in response.content.decode()
    assert everything() == before and stored_files(_files_root) == []


def test_a_6th_screenshot_is_refused_and_its_message_with_it(run_on_commit, client, _files_root):
    order = delivered(run_on_commit)
    client.post(guest_url(order), {**open_form(), "screenshots": [png(f"{i}.png") for i in range(5)]})
    dispute = Dispute.objects.get(order=order)
    assert dispute.attachments.count() == 5
    url = reverse("disputes:act_guest", kwargs={"order_pk": order.pk, "token": order.access_token, "action": "message"})
    response = client.post(
        url,
        {"body": "One more.", "screenshots": [png("6.png")]},
        follow=True,
    )
    assert "Up to 5 screenshots per party on a dispute." in response.content.decode()
    assert dispute.attachments.count() == 5 and len(stored_files(_files_root)) == 5
    assert not DisputeMessage.objects.filter(dispute=dispute, body="One more.").exists()


def test_six_screenshots_at_once_are_refused_by_the_form(run_on_commit, client, _files_root):
    order = delivered(run_on_commit)
    response = client.post(guest_url(order), {**open_form(), "screenshots": [png(f"{i}.png") for i in range(6)]})
    assert response.status_code == 400 and "Up to 5 screenshots." in response.content.decode()
    assert not Dispute.objects.exists() and stored_files(_files_root) == []


def test_exif_is_stripped_from_a_jpeg(run_on_commit, client, _files_root):
    order = delivered(run_on_commit)
    exif = Image.Exif()
    exif[0x010F] = "SecretCameraMaker"  # Make
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS latitude
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(out, format="JPEG", exif=exif.tobytes(), comment=b"hidden")
    assert b"SecretCameraMaker" in out.getvalue()
    client.post(guest_url(order), {**open_form(), "screenshots": [SimpleUploadedFile("p.jpg", out.getvalue())]})
    (stored,) = stored_files(_files_root)
    data = stored.read_bytes()
    assert b"SecretCameraMaker" not in data and b"hidden" not in data
    with Image.open(stored) as image:
        assert image.format == "JPEG" and image.size == (64, 48)
        assert dict(image.getexif()) == {} and "exif" not in image.info
    assert Attachment.objects.get().content_type == "image/jpeg"


# --- strangers ----------------------------------------------------------------------------------------------


def test_strangers_get_404_on_every_page_and_attachment(run_on_commit, client):
    buyer = factories.user_create()
    order = delivered(run_on_commit, buyer=buyer)
    client.force_login(buyer)
    client.post(reverse("disputes:order_dispute", kwargs={"pk": order.pk}), {**open_form(), "screenshots": [png()]})
    dispute = Dispute.objects.get(order=order)
    item = dispute.attachments.get()
    stranger = Client()
    stranger.force_login(factories.user_create())
    other_merchant = Client()
    factories.login_verified(other_merchant, factories.merchant_create(name="Other").user)
    wrong_token = {"pk": order.pk, "token": "not-the-token"}
    before = everything()
    for viewer in (stranger, other_merchant, Client()):
        for url in (
            reverse("disputes:order_dispute", kwargs={"pk": order.pk}),
            reverse("disputes:order_dispute_guest", kwargs=wrong_token),
            reverse("disputes:detail", kwargs={"pk": dispute.pk}),
            reverse("disputes:attachment", kwargs={"pk": dispute.pk, "attachment_pk": item.pk}),
            reverse("disputes:attachment_guest", kwargs={"order_pk": order.pk, "token": "x", "attachment_pk": item.pk}),
        ):
            assert viewer.get(url).status_code == 404, url
        for action in ("accept", "escalate", "reopen", "message"):
            url = reverse("disputes:act", kwargs={"pk": dispute.pk, "action": action})
            assert viewer.post(url, {"body": "hi", "statement": "hi"}).status_code == 404
            url = reverse("disputes:act_guest", kwargs={"order_pk": order.pk, "token": "x", "action": action})
            assert viewer.post(url, {"body": "hi", "statement": "hi"}).status_code == 404
    # The merchant pages: another merchant gets 404 (non-merchants are sent to sign in or sign up).
    assert other_merchant.get(reverse("merchant_disputes:detail", kwargs={"pk": dispute.pk})).status_code == 404
    for action in ("replace", "refund", "contest", "message"):
        url = reverse("merchant_disputes:act", kwargs={"pk": dispute.pk, "action": action})
        assert other_merchant.post(url, {"body": "hi", "statement": "hi"}).status_code == 404
        assert stranger.post(url, {"body": "hi", "statement": "hi"}).status_code == 302
    assert dispute.pk not in [d.pk for d in other_merchant.get(reverse("merchant_disputes:list")).context["disputes"]]
    assert everything() == before
    # The merchant of the order sees the screenshot, though not the buyer's page (theirs is in the merchant
    # area); staff see the screenshot too.
    merchant = merchant_client(order)
    assert merchant.get(reverse("disputes:detail", kwargs={"pk": dispute.pk})).status_code == 404
    staff = Client()
    staff.force_login(factories.user_create(is_staff=True))
    url = reverse("disputes:attachment", kwargs={"pk": dispute.pk, "attachment_pk": item.pk})
    assert staff.get(url).status_code == 200
    assert (
        merchant_client(order)
        .get(reverse("disputes:attachment", kwargs={"pk": dispute.pk, "attachment_pk": item.pk}))
        .status_code
        == 200
    )
