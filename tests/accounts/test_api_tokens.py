"""`POST /api/v1/auth/token/`: a token for any user, a second factor for merchants and staff, and the
token working wherever its user works (buyer endpoints, merchant API with scopes, staff API); tokens
listed and revoked on the security page."""

import json

import pytest
from django.test import Client
from django.utils import timezone

from accounts import account_services
from accounts.models import AccountApiToken, AuditEntry, SignIn
from tests import factories
from tests.accounts.helpers import PASSWORD
from tests.disputes.helpers import delivered

pytestmark = pytest.mark.django_db


def token_post(client: Client, body, **headers):
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post("/api/v1/auth/token/", data=raw, content_type="application/json", **headers)


def auth(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Token {token}"}


def test_a_buyer_trades_e_mail_and_password_for_a_token_that_opens_their_orders(run_on_commit):
    buyer = factories.user_create(password=PASSWORD)
    order = delivered(run_on_commit, buyer=buyer)
    response = token_post(Client(), {"email": buyer.email.upper(), "password": PASSWORD})
    assert response.status_code == 200, response.content
    token = response.json()["token"]
    record = AccountApiToken.objects.get(user=buyer)
    assert record.scopes == [] and record.digest == account_services.account_token_digest(token)
    client = Client()
    assert client.get(f"/api/v1/orders/{order.pk}/", **auth(token)).json()["id"] == order.pk
    assert client.get(f"/api/v1/orders/{order.pk}/keys/", **auth(token)).status_code == 200
    # Someone else's order answers 404 to this token.
    other = delivered(run_on_commit, buyer=factories.user_create())
    assert client.get(f"/api/v1/orders/{other.pk}/", **auth(token)).status_code == 404
    sign_in = SignIn.objects.get(user=buyer)
    assert (sign_in.method, sign_in.success) == ("api", True)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "nobody@example.com", "password": PASSWORD}, 401, "invalid_credentials"),
        ({"password": PASSWORD}, 400, "invalid"),
        ('{"email": ', 400, "parse_error"),
    ],
)
def test_bad_credentials_get_no_token(body, status, code):
    buyer = factories.user_create(password=PASSWORD)
    if isinstance(body, dict) and body.get("email") == "nobody@example.com":
        wrong = token_post(Client(), {"email": buyer.email, "password": "wrong-password"})
        assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_credentials")
        assert SignIn.objects.get(user=buyer).reason == "bad_password"
    response = token_post(Client(), body)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert not AccountApiToken.objects.exists()


def test_a_merchant_must_send_a_code_and_the_token_works_in_the_merchant_api_with_every_scope():
    merchant = factories.merchant_create()
    user = merchant.user
    user.set_password(PASSWORD)
    user.save()
    without = token_post(Client(), {"email": user.email, "password": PASSWORD})
    assert (without.status_code, without.json()["code"]) == (401, "otp_required")  # no device yet
    device = factories.totp_device_create(user=user)
    still = token_post(Client(), {"email": user.email, "password": PASSWORD})
    assert (still.status_code, still.json()["code"]) == (401, "otp_required")
    wrong = token_post(Client(), {"email": user.email, "password": PASSWORD, "otp": "000000"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "bad_otp")
    assert not AccountApiToken.objects.exists()
    device.throttle_reset()  # django-otp's back-off after the wrong code; the clock is not moved here
    good = token_post(Client(), {"email": user.email, "password": PASSWORD, "otp": factories.totp_code(device)})
    assert good.status_code == 200, good.content
    token = good.json()["token"]
    assert AccountApiToken.objects.get(user=user).scopes == ["read", "stock", "orders", "money"]
    products = Client().get("/api/v1/merchant/products/", **auth(token))
    assert products.status_code == 200, products.content
    assert Client().get("/api/v1/merchant/disputes/", **auth(token)).status_code == 200


def test_a_buyers_token_is_refused_by_the_merchant_and_staff_apis():
    buyer = factories.user_create(password=PASSWORD)
    token = token_post(Client(), {"email": buyer.email, "password": PASSWORD}).json()["token"]
    assert Client().get("/api/v1/merchant/products/", **auth(token)).status_code == 403
    assert Client().get("/api/v1/staff/disputes/", **auth(token)).status_code == 403


def test_staff_sign_in_by_api_with_a_code_and_use_the_staff_api():
    staff = factories.user_create(is_staff=True, password=PASSWORD)
    device = factories.totp_device_create(user=staff)
    refused = token_post(Client(), {"email": staff.username, "password": PASSWORD})
    assert (refused.status_code, refused.json()["code"]) == (401, "otp_required")
    answer = token_post(Client(), {"email": staff.email, "password": PASSWORD, "otp": factories.totp_code(device)})
    token = answer.json()["token"]
    assert AccountApiToken.objects.get(user=staff).scopes == []
    assert Client().get("/api/v1/staff/disputes/", **auth(token)).status_code == 200


def test_a_buyer_with_an_authenticator_app_gives_a_code_too():
    buyer = factories.user_create(password=PASSWORD)
    device = factories.totp_device_create(user=buyer)
    refused = token_post(Client(), {"email": buyer.email, "password": PASSWORD})
    assert refused.json()["code"] == "otp_required"
    assert (
        token_post(
            Client(), {"email": buyer.email, "password": PASSWORD, "otp": factories.totp_code(device)}
        ).status_code
        == 200
    )


def test_the_api_locks_out_after_repeated_failures_with_429(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    buyer = factories.user_create(password=PASSWORD)
    client = Client(REMOTE_ADDR="198.51.100.20")
    codes = [token_post(client, {"email": buyer.email, "password": "nope"}).status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    locked = token_post(client, {"email": buyer.email, "password": PASSWORD})
    assert (locked.status_code, locked.json()["code"]) == (429, "locked_out")
    assert not AccountApiToken.objects.exists()


def test_tokens_are_listed_and_revoked_on_the_security_page_and_a_revoked_token_stops_working(run_on_commit):
    buyer = factories.user_create(password=PASSWORD)
    order = delivered(run_on_commit, buyer=buyer)
    client = Client()
    client.force_login(buyer)
    refused = client.post("/account/security/tokens/", {"name": "laptop", "password": "not-it"})
    assert refused.status_code == 400 and not AccountApiToken.objects.exists()
    page = client.post("/account/security/tokens/", {"name": "laptop", "password": PASSWORD})
    assert page.status_code == 200
    secret = page.context["new_token"]
    record = AccountApiToken.objects.get(user=buyer, name="laptop")
    assert Client().get(f"/api/v1/orders/{order.pk}/", **auth(secret)).status_code == 200
    assert b"laptop" in client.get("/account/security/").content
    # Another person cannot revoke it (404) ...
    stranger = Client()
    stranger.force_login(factories.user_create())
    assert stranger.post(f"/account/security/tokens/{record.pk}/revoke/").status_code == 404
    assert Client().get(f"/api/v1/orders/{order.pk}/", **auth(secret)).status_code == 200
    # ... its owner can.
    assert client.post(f"/account/security/tokens/{record.pk}/revoke/").status_code == 302
    assert Client().get(f"/api/v1/orders/{order.pk}/", **auth(secret)).status_code == 401
    assert AuditEntry.objects.filter(action="api_token.revoked", subject_id=str(record.pk), actor=buyer).exists()


def test_revoking_an_account_token_through_the_service_twice_changes_nothing_the_second_time():
    buyer = factories.user_create()
    record, _secret = account_services.account_api_token_create(user=buyer, name="t", now=timezone.now())
    assert account_services.account_api_token_revoke(token=record, actor=buyer, now=timezone.now())
    assert not account_services.account_api_token_revoke(token=record, actor=buyer, now=timezone.now())
