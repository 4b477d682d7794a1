"""The merchant area in the browser's terms: sign-up and approval, products, stock, exports, tokens."""

import csv
import io
import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEntry, AuthenticatorDevice, User
from escrow.services import CheckoutError
from shop import services
from shop.models import CardKey, Category, Merchant, MerchantApiToken, MerchantKyc, Product, StockUpload
from tests import factories
from tests.shop.helpers import kyc_fields, plaintext_keys, upload

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-1"


@pytest.fixture(autouse=True)
def _kyc_files(settings, tmp_path):
    settings.KYC_FILES_ROOT = tmp_path / "kyc-files"


@pytest.fixture
def merchant():
    return factories.merchant_create(name="Lucky Keys")


@pytest.fixture
def client_for(client):
    def sign_in(merchant):
        factories.login_verified(client, merchant.user)
        return client

    return sign_in


@pytest.fixture
def admin_client(admin_user):
    """pytest-django's admin client, with the second factor the admin now asks for."""
    client = Client()
    factories.login_verified(client, admin_user)
    return client


def test_visitor_signs_up_waits_and_sees_the_rejection_reason(client, admin_client, run_on_commit):
    with run_on_commit():
        response = client.post(
            "/merchant/signup/",
            {
                "username": "newshop",
                "email": "new@example.com",
                "password": "a-Long-pass-123",
                "name": "New Shop",
                "contact": "wechat: newshop",
                **kyc_fields(),
            },
        )
    assert (response.status_code, response.url) == (302, "/merchant/signup/sent/")
    merchant = Merchant.objects.get(name="New Shop")
    assert merchant.status == "pending"
    assert mail.outbox[-1].to == ["new@example.com"]
    assert mail.outbox[-1].extra_headers["X-Shop-Event"] == "merchant.signup"
    signed_in = client.post("/accounts/login/", {"username": "newshop", "password": "a-Long-pass-123"})
    assert signed_in.status_code == 302
    assert client.get("/merchant/").url == "/merchant/status/"  # cannot list products yet

    response = admin_client.post(
        "/admin/shop/merchant/",
        {"action": "reject", ACTION_CHECKBOX_NAME: [merchant.pk], "reason": "Contact does not answer."},
    )
    assert response.status_code == 302
    merchant.refresh_from_db()
    assert (merchant.status, merchant.rejection_reason) == ("rejected", "Contact does not answer.")
    assert "Contact does not answer." in client.get("/merchant/status/").content.decode()

    admin_client.post("/admin/shop/merchant/", {"action": "approve", ACTION_CHECKBOX_NAME: [merchant.pk]})
    merchant.refresh_from_db()
    assert merchant.status == "approved"
    # Approved merchants must use two-factor authentication: the area sends them to enrol first.
    assert client.get("/merchant/").url == "/account/security/totp/?next=%2Fmerchant%2F"
    client.get("/account/security/totp/?next=%2Fmerchant%2F")
    device = AuthenticatorDevice.objects.get(user=merchant.user, confirmed=False)
    client.post("/account/security/totp/?next=%2Fmerchant%2F", {"code": factories.totp_code(device)})
    assert client.get("/merchant/").status_code == 200
    assert AuditEntry.objects.filter(action__in=["merchant.rejected", "merchant.approved"]).count() == 2


def test_reject_needs_a_reason(admin_client):
    merchant = services.merchant_create(user=factories.user_create(), name="Pending", now=timezone.now())
    response = admin_client.post("/admin/shop/merchant/", {"action": "reject", ACTION_CHECKBOX_NAME: [merchant.pk]})

    assert response.status_code == 200  # the reason form
    merchant.refresh_from_db()
    assert merchant.status == "pending"


def test_product_crud_pause_resume_and_safe_markdown(client_for, merchant, client):
    gift = Category.objects.create(slug="gift", name="Gift cards")
    merchant_client = client_for(merchant)
    response = merchant_client.post(
        "/merchant/products/new/",
        {
            "title": "Gift card",
            "description": "**Bold** <script>alert(1)</script> [x](javascript:alert(1))",
            "price": "12.50",
            "currency": "USD",
            "category": gift.pk,
            "inspection_hours": 48,
            "max_per_order": 3,
            "low_stock_threshold": 5,
        },
    )
    product = Product.objects.get(merchant=merchant)
    assert response.url == f"/merchant/products/{product.pk}/stock/"
    assert (product.price, product.currency, product.inspection_hours) == (1250, "USD", 48)

    merchant_client.post(
        f"/merchant/products/{product.pk}/edit/",
        {
            "title": "Gift card $12.50",
            "description": product.description,
            "price": "12.5",
            "currency": "USD",
            "category": gift.pk,
            "inspection_hours": 24,
            "max_per_order": 3,
            "low_stock_threshold": 5,
        },
    )
    product.refresh_from_db()
    assert product.title == "Gift card $12.50"

    upload(product, b"K1\n")
    page = client.get(f"/products/{product.pk}/").content.decode()
    assert "<strong>Bold</strong>" in page
    assert "<script>alert(1)" not in page and "javascript:" not in page

    merchant_client.post(f"/merchant/products/{product.pk}/pause/")
    assert client.get(f"/products/{product.pk}/").status_code == 404
    merchant_client.post(f"/merchant/products/{product.pk}/resume/")
    assert client.get(f"/products/{product.pk}/").status_code == 200


def test_dashboard_counts_every_state_in_one_query(client_for, merchant, django_assert_max_num_queries):
    products = [factories.product_create(merchant=merchant, stock=4) for _ in range(5)]
    factories.order_place(product=products[0], quantity=2)  # two reserved
    services.keys_revoke(product=products[1], actor=None, now=timezone.now())
    merchant_client = client_for(merchant)
    merchant_client.get("/merchant/")  # the session's first request gives it its tracked row (accounts.sessions)

    # session, user, the session's tracked row, the second-factor device, merchant, products with counts,
    # the header's unread inbox count, (savepoint)
    with django_assert_max_num_queries(8):
        page = merchant_client.get("/merchant/products/").content.decode()

    assert page.count('data-count="available"') == 5
    row0 = page.split(f'data-product="{products[0].pk}"')[1]
    assert '<td data-count="available">2' in row0 and '<td data-count="reserved">2' in row0
    row1 = page.split(f'data-product="{products[1].pk}"')[1]
    assert '<td data-count="revoked">4' in row1


def test_upload_by_file_shows_progress_and_report(client_for, merchant, django_capture_on_commit_callbacks):
    product = factories.product_create(merchant=merchant, stock=0)
    merchant_client = client_for(merchant)
    data = "卡密-1\r\n\r\n卡密-1\r\n卡密-2\r\n".encode("gbk")

    with django_capture_on_commit_callbacks(execute=True):
        response = merchant_client.post(
            f"/merchant/products/{product.pk}/stock/",
            {"file": SimpleUploadedFile("keys.txt", data), "text": "", "delimiter": "newline"},
        )
    done = StockUpload.objects.get()
    assert response.url == f"/merchant/uploads/{done.pk}/"
    state = merchant_client.get(f"/merchant/uploads/{done.pk}/status/").json()
    assert state == {
        "id": done.pk,
        "status": "done",
        "total": 4,
        "processed": 4,
        "imported": 2,
        "duplicates": 1,
        "rejected": 1,
        "percent": 100,
        "error": "",
    }
    assert 'data-status="done"' in merchant_client.get(f"/merchant/uploads/{done.pk}/").content.decode()
    report = merchant_client.get(f"/merchant/uploads/{done.pk}/rejected.csv")
    rows = list(csv.reader(io.StringIO(b"".join(report.streaming_content).decode())))
    assert rows == [
        ["line", "reason", "explanation", "entry"],
        ["2", "empty", "Empty", "1"],
        ["3", "duplicate_in_file", "Duplicate in the file", "1"],
    ]


def test_paste_and_bad_file_errors(client_for, merchant):
    product = factories.product_create(merchant=merchant, stock=0)
    merchant_client = client_for(merchant)

    response = merchant_client.post(
        f"/merchant/products/{product.pk}/stock/",
        {"file": SimpleUploadedFile("keys.txt", b"\x00\x01\x02binary"), "delimiter": "newline"},
    )
    assert response.status_code == 200
    assert "binary file" in response.content.decode()
    response = merchant_client.post(
        f"/merchant/products/{product.pk}/stock/", {"text": "A;B;C", "delimiter": "semicolon"}
    )
    assert response.status_code == 302
    assert StockUpload.objects.get().total == 3


def test_another_merchants_things_answer_404(client_for, merchant):
    other = factories.merchant_create(name="Other")
    theirs = factories.product_create(merchant=other, stock=0)
    their_upload = upload(theirs, b"K1\n")
    their_token, _secret = services.merchant_api_token_create_unchecked(
        merchant=other, name="x", actor=None, now=timezone.now()
    )
    merchant_client = client_for(merchant)

    for url in [
        f"/merchant/products/{theirs.pk}/edit/",
        f"/merchant/products/{theirs.pk}/stock/",
        f"/merchant/products/{theirs.pk}/export/",
        f"/merchant/uploads/{their_upload.pk}/",
        f"/merchant/uploads/{their_upload.pk}/status/",
        f"/merchant/uploads/{their_upload.pk}/rejected.csv",
    ]:
        assert merchant_client.get(url).status_code == 404, url
    for url in [
        f"/merchant/products/{theirs.pk}/pause/",
        f"/merchant/products/{theirs.pk}/revoke/",
        f"/merchant/products/{theirs.pk}/stock/",
        f"/merchant/tokens/{their_token.pk}/revoke/",
    ]:
        assert merchant_client.post(url, {"revoke_all": "on", "text": "X", "delimiter": "newline"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "active"
    assert CardKey.objects.filter(product=theirs, status="available").count() == 1
    assert StockUpload.objects.filter(product=theirs).count() == 1
    assert MerchantApiToken.objects.get(pk=their_token.pk).revoked_at is None


def test_revoke_chosen_and_all_keys_and_revoked_keys_never_sell(client_for, merchant):
    product = factories.product_create(merchant=merchant, stock=0, low_stock_threshold=0)
    upload(product, b"A\nB\nC\nD\n")
    merchant_client = client_for(merchant)

    merchant_client.post(f"/merchant/products/{product.pk}/revoke/", {"keys": " A \nC\nnot-mine\n"})
    assert plaintext_keys(product) == ["B", "D"]
    merchant_client.post(f"/merchant/products/{product.pk}/revoke/", {"revoke_all": "on"})
    assert plaintext_keys(product) == []
    assert CardKey.objects.filter(product=product, status="revoked").count() == 4
    with pytest.raises(CheckoutError):
        factories.order_place(product=product, quantity=1)


def test_export_needs_the_password_and_is_recorded(client_for, merchant):
    product = factories.product_create(merchant=merchant, stock=0)
    upload(product, b"EXPORT-1\nEXPORT-2\n")
    merchant_client = client_for(merchant)
    device = AuthenticatorDevice.objects.get(user=merchant.user)

    wrong = merchant_client.post(
        f"/merchant/products/{product.pk}/export/", {"password": "nope", "code": factories.totp_code(device)}
    )
    assert wrong.status_code == 200 and "EXPORT-1" not in wrong.content.decode()
    assert not AuditEntry.objects.filter(action="stock.exported").exists()

    response = merchant_client.post(
        f"/merchant/products/{product.pk}/export/", {"password": PASSWORD, "code": factories.totp_code(device)}
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["id", "key", "created_at"]
    assert sorted(row[1] for row in rows[1:]) == ["EXPORT-1", "EXPORT-2"]
    entry = AuditEntry.objects.get(action="stock.exported")
    assert (entry.actor, entry.data) == (merchant.user, {"count": 2})


def test_export_refuses_without_a_fresh_code_and_records_nothing(client_for, merchant):
    product = factories.product_create(merchant=merchant, stock=0)
    upload(product, b"EXPORT-1\n")
    merchant_client = client_for(merchant)
    device = AuthenticatorDevice.objects.get(user=merchant.user)
    url = f"/merchant/products/{product.pk}/export/"
    code = factories.totp_code(device)

    missing = merchant_client.post(url, {"password": PASSWORD})
    wrong = merchant_client.post(url, {"password": PASSWORD, "code": "000000" if code != "000000" else "111111"})
    for response in (missing, wrong):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html") and "EXPORT-1" not in response.content.decode()
    assert "That code is wrong or was already used." in wrong.content.decode()
    assert not AuditEntry.objects.filter(action="stock.exported").exists()

    device.refresh_from_db()
    device.throttle_reset()
    assert merchant_client.post(url, {"password": PASSWORD, "code": code}).status_code == 200
    assert AuditEntry.objects.filter(action="stock.exported").count() == 1
    reused = merchant_client.post(url, {"password": PASSWORD, "code": code})
    assert "EXPORT-1" not in reused.content.decode()
    assert "That code is wrong or was already used." in reused.content.decode()
    assert AuditEntry.objects.filter(action="stock.exported").count() == 1


def test_low_stock_sends_one_email_per_dip(merchant):
    product = factories.product_create(merchant=merchant, stock=0, low_stock_threshold=3)
    upload(product, b"A\nB\nC\nD\n")
    assert mail.outbox == []

    def sell_one():
        order = factories.order_place(product=product).order
        services.keys_sell(order_pk=order.pk)
        return services.product_low_stock_check(product_pk=product.pk, now=timezone.now())

    with_captured = []
    assert sell_one() is False  # 3 left: not below 3
    with_captured.append(sell_one())  # 2 left: below → one e-mail
    with_captured.append(sell_one())  # 1 left: already told
    assert with_captured == [True, False]
    upload(product, b"E\nF\nG\n")  # back to 4: re-armed
    product.refresh_from_db()
    assert product.low_stock_notified_at is None
    assert sell_one() is False  # 3
    assert sell_one() is True  # 2: the next dip, the next e-mail


def test_low_stock_email_goes_out_on_commit(merchant, django_capture_on_commit_callbacks):
    product = factories.product_create(merchant=merchant, stock=0, low_stock_threshold=5)
    with django_capture_on_commit_callbacks(execute=True):
        upload(product, b"A\nB\n")

    assert len(mail.outbox) == 1
    assert product.title in mail.outbox[0].subject
    assert mail.outbox[0].to == [merchant.user.email]


def test_tokens_are_shown_once_stored_hashed_and_revocable(client_for, merchant):
    merchant_client = client_for(merchant)
    device = AuthenticatorDevice.objects.get(user=merchant.user)
    page = merchant_client.post(
        "/merchant/tokens/",
        {"name": "sync", "scopes": ["read", "stock", "orders", "money"], "code": factories.totp_code(device)},
    )
    page = page.content.decode()
    token = MerchantApiToken.objects.get(merchant=merchant)
    secret = page.split('data-testid="new-token"')[1].split("<code>")[1].split("</code>")[0]

    assert secret.startswith("cks_") and secret not in str(token.__dict__)
    assert secret not in merchant_client.get("/merchant/tokens/").content.decode()
    api = {"HTTP_AUTHORIZATION": f"Token {secret}"}
    from django.test import Client

    assert Client().get("/api/v1/merchant/products/", **api).status_code == 200
    merchant_client.post(f"/merchant/tokens/{token.pk}/revoke/")
    assert Client().get("/api/v1/merchant/products/", **api).status_code == 401


SIGNUP = {"password": "a-Long-pass-123", "name": "Copy Shop", "contact": "wechat: copy"}


@pytest.mark.parametrize(
    ("username", "email"),
    [("taken", "fresh@example.com"), ("TAKEN", "fresh@example.com"), ("fresh", "Owner@Example.com")],
)
def test_signup_with_a_taken_username_or_email_answers_exactly_like_success(client, run_on_commit, username, email):
    owner = factories.user_create(username="taken")
    owner.email = "owner@example.com"
    owner.save(update_fields=["email"])
    with run_on_commit():
        fresh = Client().post(
            "/merchant/signup/", {**SIGNUP, **kyc_fields(), "username": "brandnew", "email": "b@example.com"}
        )
    with run_on_commit():
        taken = client.post("/merchant/signup/", {**SIGNUP, **kyc_fields(), "username": username, "email": email})
    assert (taken.status_code, taken.url) == (fresh.status_code, fresh.url) == (302, "/merchant/signup/sent/")
    page_fresh, page_taken = (
        re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", c.get(fresh.url).content) for c in (Client(), client)
    )
    assert page_taken == page_fresh
    assert "_auth_user_id" not in client.session
    # Nothing was created for the taken details; their owner was told instead.
    assert Merchant.objects.filter(name="Copy Shop").count() == 1
    assert MerchantKyc.objects.count() == 1  # no document is kept for the application that created nothing
    assert not User.objects.filter(username__iexact="fresh").exists()
    assert not User.objects.filter(email__iexact="fresh@example.com").exists()
    notice = mail.outbox[-1]
    assert notice.to == ["owner@example.com"]
    assert notice.extra_headers["X-Shop-Event"] == "merchant.signup_taken"
