"""Merchant qualification (KYC): the sign-up's KYC step, the document kept private (sealed, outside the
public paths, served only to staff with a verified second factor, every reading audited), deleted 90
days after a rejection, and the verified badge on the public page and the catalogue."""

import io
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from accounts.models import AuditEntry
from config.celery import app as celery_app
from shop import services
from shop.models import Merchant, MerchantKyc, MerchantStatus
from shop.services import ShopError
from shop.tasks import kyc_documents_purge_task
from tests import factories
from tests.shop.helpers import kyc_fields, kyc_image

pytestmark = pytest.mark.django_db
PASSWORD = "a-Long-pass-123"


@pytest.fixture(autouse=True)
def kyc_root(settings, tmp_path):
    settings.KYC_FILES_ROOT = tmp_path / "kyc-files"
    return settings.KYC_FILES_ROOT


@pytest.fixture
def staff_client():
    client = Client()
    factories.login_verified(client, factories.user_create(is_staff=True))
    return client


def applicant(*, name="Lucky Keys", **kyc) -> Merchant:
    """A signed-in user's application with its KYC step, through the service."""
    data = kyc_fields(**kyc)
    submission = services.kyc_submission_check(
        kind=data["kind"], legal_name=data["legal_name"], upload=data["document"]
    )
    return services.merchant_signup(
        user=factories.user_create(), name=name, contact="wechat: lucky", now=timezone.now(), kyc=submission
    )


def document_url(merchant) -> str:
    return f"/staff/merchants/{merchant.pk}/kyc-document/"


# --- the sign-up's KYC step -------------------------------------------------------------------------------


def test_a_visitor_applies_with_the_kyc_step_and_the_document_is_sealed_outside_the_public_paths(
    client, run_on_commit, kyc_root, settings
):
    document = kyc_image()
    original = document.read()
    document.seek(0)
    with run_on_commit():
        response = client.post(
            "/merchant/signup/",
            {
                "username": "newshop",
                "email": "new@example.com",
                "password": PASSWORD,
                "name": "New Shop",
                "contact": "wechat: newshop",
                "kind": "business",
                "legal_name": "  New   Shop Trading Ltd. ",
                "document": document,
            },
        )
    assert (response.status_code, response.url) == (302, "/merchant/signup/sent/")
    kyc = MerchantKyc.objects.get(merchant__name="New Shop")
    assert (kyc.kind, kyc.legal_name, kyc.document_content_type) == ("business", "New Shop Trading Ltd.", "image/png")
    path = services.kyc_document_path(kyc)
    assert path.is_file() and path.parent.parent == kyc_root
    assert not str(path).startswith((str(settings.MEDIA_ROOT), str(settings.STATIC_ROOT)))
    sealed = path.read_bytes()
    assert b"PNG" not in sealed and b"IHDR" not in sealed  # nothing of the image readable at rest
    assert "licence" not in path.name  # the uploaded name leaves no trace
    assert kyc.document_size > 0 and len(kyc.document_sha256) == 64
    assert original[:8] == b"\x89PNG\r\n\x1a\n"
    entry = AuditEntry.objects.get(action="merchant.kyc_submitted")
    assert entry.subject_id == str(kyc.merchant_id) and entry.data["kind"] == "business"


def test_a_signed_in_user_applies_with_the_kyc_step(client):
    user = factories.user_create()
    client.force_login(user)
    response = client.post("/merchant/signup/", {"name": "Mine", "contact": "qq 123", **kyc_fields(kind="individual")})
    assert response.status_code == 302
    assert MerchantKyc.objects.get(merchant__user=user).kind == "individual"
    page = client.get("/merchant/status/").content.decode()
    assert 'data-testid="kyc-status"' in page and "Only staff can see it" in page
    assert "/kyc-document/" not in page  # not even the merchant gets a link to it


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (SimpleUploadedFile("id.png", b"MZ\x90\x00 this is a program", content_type="image/png"), "PNG, JPEG or WebP"),
        (SimpleUploadedFile("id.pdf", b"%PDF-1.7\n no trailer here", content_type="application/pdf"), "or a PDF"),
        (SimpleUploadedFile("id.svg", b"<svg onload=alert(1)></svg>", content_type="image/svg+xml"), "or a PDF"),
    ],
)
def test_a_document_that_is_not_an_image_or_pdf_is_refused_and_nothing_is_created(client, kyc_root, document, message):
    client.force_login(user := factories.user_create())
    response = client.post("/merchant/signup/", {"name": "Mine", "contact": "qq", **kyc_fields(document=document)})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Merchant.objects.filter(user=user).exists()
    assert not kyc_root.exists() or not any(kyc_root.rglob("*.*"))


def test_a_document_over_the_size_limit_is_refused(client, settings):
    settings.KYC_DOCUMENT_MAX_BYTES = 1024
    client.force_login(user := factories.user_create())
    big = kyc_image(size=(400, 400))
    assert big.size > 1024
    response = client.post("/merchant/signup/", {"name": "Mine", "contact": "qq", **kyc_fields(document=big)})
    assert response.status_code == 400 and "larger than" in response.content.decode()
    assert not Merchant.objects.filter(user=user).exists()


def test_the_kyc_step_is_required(client):
    client.force_login(user := factories.user_create())
    response = client.post("/merchant/signup/", {"name": "Mine", "contact": "qq", "kind": "business"})
    assert response.status_code == 400
    assert not Merchant.objects.filter(user=user).exists()


def test_a_pdf_is_kept_as_sent_and_an_images_metadata_is_dropped():
    pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
    checked = services.kyc_document_check(SimpleUploadedFile("l.pdf", pdf))
    assert (checked.content_type, checked.data) == ("application/pdf", pdf)
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # camera maker
    Image.new("RGB", (20, 20)).save(out, format="JPEG", exif=exif.tobytes())
    assert b"SecretCam" in out.getvalue()
    checked = services.kyc_document_check(SimpleUploadedFile("id.jpg", out.getvalue()))
    assert checked.content_type == "image/jpeg" and b"SecretCam" not in checked.data
    with pytest.raises(ShopError) as refused:
        services.kyc_submission_check(kind="robot", legal_name="X", upload=kyc_image())
    assert refused.value.code == "bad_kyc_kind"


# --- staff, and only staff, read the document ----------------------------------------------------------


def test_staff_see_the_kyc_fields_and_open_the_document_and_each_reading_is_audited(staff_client):
    merchant = applicant()
    page = staff_client.get("/staff/queues/merchants/").content.decode()
    assert "Lucky Trading Co., Ltd." in page
    assert f'href="{document_url(merchant)}"' in page
    response = staff_client.get(document_url(merchant))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]
    assert response.content.startswith(b"\x89PNG")
    Image.open(io.BytesIO(response.content)).verify()
    viewed = AuditEntry.objects.filter(action="merchant.kyc_document_viewed", subject_id=str(merchant.pk))
    assert viewed.count() == 1 and viewed.get().actor.is_staff


def test_no_one_but_verified_staff_ever_downloads_a_kyc_document(client):
    merchant = applicant()
    other = applicant(name="Other Shop")
    url = document_url(merchant)
    assert client.get(url).status_code == 302  # anonymous: to sign in
    # The applicant themself, another merchant (each with a verified second factor), a plain buyer.
    for user in (merchant.user, other.user, factories.user_create()):
        signed_in = Client()
        factories.login_verified(signed_in, user)
        for target in (merchant, other):
            response = signed_in.get(document_url(target))
            assert response.status_code == 302, user
            assert b"PNG" not in response.content
    # Staff with a password alone (no second factor yet) do not get it either.
    staff = Client()
    staff.force_login(factories.user_create(is_staff=True))
    response = staff.get(url)
    assert response.status_code == 302 and b"PNG" not in response.content
    assert not AuditEntry.objects.filter(action="merchant.kyc_document_viewed").exists()


def test_a_merchant_without_a_document_answers_404(staff_client):
    bare = services.merchant_create(user=factories.user_create(), name="No KYC", now=timezone.now())
    assert staff_client.get(document_url(bare)).status_code == 404
    assert staff_client.get("/staff/merchants/999999/kyc-document/").status_code == 404
    with pytest.raises(ShopError):
        services.merchant_kyc_document_read(
            kyc=MerchantKyc.objects.get(merchant=applicant()), actor=bare.user, now=timezone.now()
        )


# --- approval verifies; rejection starts the 90 days -----------------------------------------------------


def test_approval_with_the_kyc_on_file_verifies_the_merchant_and_says_what_was_verified(staff_client, client):
    merchant = applicant()
    response = staff_client.post(f"/staff/merchants/{merchant.pk}/approve/")
    assert response.status_code == 302
    merchant.refresh_from_db()
    assert merchant.is_approved and merchant.is_verified and merchant.verified_at is not None
    entry = AuditEntry.objects.get(action="merchant.approved", subject_id=str(merchant.pk))
    assert entry.data == {"verified": "business"}
    factories.product_create(merchant=merchant, title="Steam card")

    public = client.get(f"/merchants/{merchant.pk}/").content.decode()
    assert 'data-testid="verified"' in public
    assert "Business name verified: Lucky Trading Co., Ltd." in public
    assert "/kyc-document/" not in public
    catalog = client.get("/").content.decode()
    assert 'data-testid="verified"' in catalog and "Business name verified on" in catalog


def test_an_individuals_legal_name_is_not_published(staff_client, client):
    merchant = applicant(kind="individual", legal_name="Zhang San")
    staff_client.post(f"/staff/merchants/{merchant.pk}/approve/")
    public = client.get(f"/merchants/{merchant.pk}/").content.decode()
    assert 'data-testid="verified-detail"' in public and "owner verified on" in public
    assert "Zhang San" not in public


def test_a_merchant_approved_without_kyc_is_not_verified(client):
    merchant = factories.merchant_create(name="Old Timer")
    factories.product_create(merchant=merchant)
    assert merchant.is_approved and not merchant.is_verified
    assert 'data-testid="verified"' not in client.get("/").content.decode()
    assert 'data-testid="not-verified"' in client.get(f"/merchants/{merchant.pk}/").content.decode()


def test_the_document_is_deleted_90_days_after_a_rejection_and_not_before(staff_client, kyc_root, run_on_commit):
    rejected, pending = applicant(), applicant(name="Still Pending")
    staff_client.post(f"/staff/merchants/{rejected.pk}/reject/", {"reason": "The licence is unreadable."})
    rejected.refresh_from_db()
    assert rejected.status == MerchantStatus.REJECTED and rejected.rejected_at is not None
    kyc = MerchantKyc.objects.get(merchant=rejected)
    path = services.kyc_document_path(kyc)
    assert path.is_file()

    assert services.merchant_kyc_documents_purge(now=rejected.rejected_at + timedelta(days=89, hours=23)) == 0
    assert path.is_file()
    with pytest.MonkeyPatch.context() as patch, run_on_commit():  # the file goes once the row's change commits
        patch.setattr(timezone, "now", lambda: rejected.rejected_at + timedelta(days=90, seconds=1))
        assert kyc_documents_purge_task.delay().get() == 1
    kyc.refresh_from_db()
    assert not path.exists() and kyc.document_deleted_at is not None and not kyc.has_document
    assert services.kyc_document_path(MerchantKyc.objects.get(merchant=pending)).is_file()  # the pending one stays
    entry = AuditEntry.objects.get(action="merchant.kyc_document_deleted")
    assert entry.subject_id == str(rejected.pk) and entry.data["retention_days"] == 90
    # A second run finds nothing; staff get a 404; approving now does not verify (nothing left to check).
    assert services.merchant_kyc_documents_purge(now=timezone.now() + timedelta(days=365)) == 0
    assert staff_client.get(document_url(rejected)).status_code == 404
    services.merchant_approve(merchant=rejected, actor=None, now=timezone.now())
    rejected.refresh_from_db()
    assert rejected.is_approved and not rejected.is_verified


def test_the_purge_is_on_the_beat_schedule_daily():
    entry = celery_app.conf.beat_schedule["shop.kyc_documents_purge"]
    assert entry["task"] == "shop.kyc_documents_purge" == kyc_documents_purge_task.name
    assert entry["schedule"].hour == {3}
