"""Buyer sign-up through the page and the API, e-mail verification by a signed expiring link, the guest
orders it attaches, and the one-open-dispute rule for unverified accounts."""

import json

import pytest
from django.core import mail, signing
from django.test import Client
from django.utils import timezone

from accounts import account_services
from accounts.models import AccountApiToken, AuditEntry, User
from disputes import services as dispute_services
from disputes.services import DisputeError
from escrow.models import Order
from tests import factories
from tests.accounts.helpers import PASSWORD, link_in, mails
from tests.disputes.helpers import delivered

pytestmark = pytest.mark.django_db


def api_signup(client: Client, body):
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post("/api/v1/auth/signup/", data=raw, content_type="application/json")


def test_the_api_signs_a_buyer_up_with_a_working_token_and_mails_a_verification_link(run_on_commit):
    client = Client()
    with run_on_commit():
        response = api_signup(client, {"email": "New.Buyer@Example.com", "password": PASSWORD})
    assert response.status_code == 201, response.content
    body = response.json()
    user = User.objects.get(pk=body["id"])
    assert (user.email, user.is_email_verified, user.is_staff) == ("New.Buyer@example.com", False, False)
    assert user.check_password(PASSWORD)
    token = AccountApiToken.objects.get(user=user)
    assert token.scopes == [] and body["token"].startswith("cka_") and body["token"] not in {token.digest}
    # The token works on a buyer endpoint (an unknown order answers 404, not 401).
    assert client.get("/api/v1/orders/999999/", HTTP_AUTHORIZATION=f"Token {body['token']}").status_code == 404
    assert client.get("/api/v1/orders/999999/", HTTP_AUTHORIZATION="Token cka_nope").status_code == 401
    [message] = mails("account.verify_email")
    assert message.to == ["New.Buyer@example.com"]
    assert AuditEntry.objects.filter(action="account.signed_up", subject_id=str(user.pk)).exists()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"email": "weak@example.com", "password": "123"}, "weak_password"),
        ({"email": "weak@example.com", "password": "password"}, "weak_password"),
        ({"email": "weak@example.com", "password": "weak@example.com1"}, "weak_password"),
        ({"email": "TAKEN@example.com", "password": PASSWORD}, "email_taken"),
        ({"email": "not-an-address", "password": PASSWORD}, "bad_email"),
        ({"email": "weak@example.com"}, "required"),
        ('{"email": "weak@example.com", "password": ', "parse_error"),
        ("[1, 2]", "invalid"),
    ],
)
def test_bad_sign_ups_get_a_clear_400_and_create_nothing(body, code):
    factories.user_create(username="taken", email="taken@example.com")
    users, tokens = User.objects.count(), AccountApiToken.objects.count()
    response = api_signup(Client(), body)
    assert response.status_code == 400, response.content
    answer = response.json()
    assert answer["detail"]
    assert answer["code"] == code or (code == "required" and answer["code"] == "invalid")
    assert (User.objects.count(), AccountApiToken.objects.count(), len(mail.outbox)) == (users, tokens, 0)


def test_the_sign_up_page_makes_a_signed_in_buyer_in_their_language(run_on_commit):
    client = Client()
    with run_on_commit():
        response = client.post(
            "/accounts/signup/", {"email": "page@example.com", "password": PASSWORD, "language": "zh-hans"}
        )
    assert response.status_code == 302 and response.url == "/account/security/"
    user = User.objects.get(email="page@example.com")
    assert user.language == "zh-hans" and not user.is_email_verified
    page = client.get("/account/security/")
    assert page.status_code == 200 and page.context["user"] == user
    [message] = mails("account.verify_email")
    assert "确认" in message.subject  # sent in the language chosen


def test_the_sign_up_page_refuses_a_weak_password_and_a_taken_address_on_the_form():
    factories.user_create(username="owner", email="owner@example.com")
    client = Client()
    weak = client.post("/accounts/signup/", {"email": "x@example.com", "password": "12345678", "language": "en"})
    taken = client.post("/accounts/signup/", {"email": "Owner@Example.com", "password": PASSWORD, "language": "en"})
    assert weak.status_code == taken.status_code == 200
    assert weak.context["form"].errors["password"] and taken.context["form"].errors["email"]
    assert not User.objects.filter(email__iexact="x@example.com").exists()
    assert User.objects.filter(email__iexact="owner@example.com").count() == 1


def test_verification_by_the_mailed_link_attaches_the_guest_orders_of_that_address(run_on_commit):
    product = factories.product_create(stock=5)
    mine = factories.order_place(product=product, email="guest@example.com").order
    shouty = factories.order_place(product=product, email="GUEST@example.com").order
    theirs = factories.order_place(product=product, email="other@example.com").order
    client = Client()
    with run_on_commit():
        api_signup(client, {"email": "guest@example.com", "password": PASSWORD})
    user = User.objects.get(email="guest@example.com")
    assert Order.objects.filter(buyer=user).count() == 0  # not before the address is proved
    link = link_in(mails("account.verify_email")[0], "/accounts/verify/")
    response = client.get(link)
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.is_email_verified
    assert set(Order.objects.filter(buyer=user).values_list("pk", flat=True)) == {mine.pk, shouty.pk}
    assert Order.objects.get(pk=theirs.pk).buyer is None
    entry = AuditEntry.objects.get(action="account.guest_orders_attached", subject_id=str(user.pk))
    assert sorted(entry.data["orders"]) == sorted([mine.pk, shouty.pk])
    # Following the link again changes nothing.
    assert client.get(link).status_code == 302
    assert AuditEntry.objects.filter(action="account.email_verified", subject_id=str(user.pk)).count() == 1


def test_a_forged_or_expired_verification_link_verifies_nothing(settings):
    user = account_services.account_signup(email="late@example.com", password=PASSWORD, now=timezone.now())
    token = account_services.email_verification_token(user)
    forged = signing.dumps({"u": user.pk, "e": "late@example.com"}, salt="another-purpose")
    assert Client().get(f"/accounts/verify/{forged}/").status_code == 400
    settings.ACCOUNT_LINK_MAX_AGE_SECONDS = -1  # every link is already too old
    response = Client().get(f"/accounts/verify/{token}/")
    assert response.status_code == 400 and b"expired" in response.content
    user.refresh_from_db()
    assert not user.is_email_verified


def test_an_unverified_buyer_keeps_one_dispute_open_at_a_time(run_on_commit):
    buyer = account_services.account_signup(email="fresh@example.com", password=PASSWORD, now=timezone.now())
    first, second = delivered(run_on_commit, buyer=buyer), delivered(run_on_commit, buyer=buyer)

    def open_on(order):
        return dispute_services.dispute_open(
            order_pk=order.pk, reason="key_invalid", statement="It does not work.", now=timezone.now(), actor=buyer
        )

    open_on(first)
    with pytest.raises(DisputeError) as refused:
        open_on(second)
    assert refused.value.code == "email_unverified"
    assert not hasattr(Order.objects.get(pk=second.pk), "dispute") or second.status == "delivered"
    assert Order.objects.get(pk=second.pk).status == "delivered"
    # Once the e-mail is verified the rule no longer applies.
    account_services.email_verify(token=account_services.email_verification_token(buyer), now=timezone.now())
    assert open_on(second).order_id == second.pk


def test_the_one_dispute_rule_answers_409_through_the_api(run_on_commit):
    client = Client()
    with run_on_commit():
        token = api_signup(client, {"email": "api-fresh@example.com", "password": PASSWORD}).json()["token"]
    buyer = User.objects.get(email="api-fresh@example.com")
    first, second = delivered(run_on_commit, buyer=buyer), delivered(run_on_commit, buyer=buyer)
    body = {"reason": "key_invalid", "statement": "Invalid key."}
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    opened = client.post(f"/api/v1/orders/{first.pk}/disputes/", body, content_type="application/json", **auth)
    assert opened.status_code == 201, opened.content
    refused = client.post(f"/api/v1/orders/{second.pk}/disputes/", body, content_type="application/json", **auth)
    assert refused.status_code == 409 and refused.json()["code"] == "email_unverified"
