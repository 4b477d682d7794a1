"""Sign-ins: recorded with address, network, browser and device; one alert for a new device on a new
network; "this wasn't me" ends every session and token; the lockout per account and its unlock link;
an untrusted peer's X-Forwarded-For is ignored."""

import json

import pytest
from django.core import mail
from django.test import Client

from accounts.models import AccountApiToken, AuditEntry, SignIn, UserSession
from core.device import DEVICE_COOKIE
from tests import factories
from tests.accounts.helpers import PASSWORD, link_in, mails

pytestmark = pytest.mark.django_db


def page_sign_in(client: Client, name: str, password: str = PASSWORD):
    return client.post("/accounts/login/", {"username": name, "password": password, "next": "/orders/"})


def browser(address: str) -> Client:
    """A browser on `address` that got its device cookie from a first page view."""
    client = Client(REMOTE_ADDR=address, HTTP_USER_AGENT="TestBrowser/1.0")
    client.get("/accounts/login/")
    assert DEVICE_COOKIE in client.cookies
    return client


def test_a_new_device_on_a_new_network_sends_one_alert_and_the_same_device_again_none(run_on_commit):
    buyer = factories.user_create(password=PASSWORD)
    home = browser("198.51.100.7")
    with run_on_commit():
        assert page_sign_in(home, buyer.email).status_code == 302
    assert mails("security.new_device") == []  # the account's first sign-in has nothing to compare with
    first = SignIn.objects.get(user=buyer)
    assert (first.ip, first.network, first.user_agent, first.success) == (
        "198.51.100.7",
        "198.51.100.0/24",
        "TestBrowser/1.0",
        True,
    )
    assert first.device and first.device == home.cookies[DEVICE_COOKIE].value.split(":")[0]

    # The same device from elsewhere, and a new device at home: neither is both new.
    home.cookies.pop("sessionid", None)
    roaming = home
    roaming.defaults["REMOTE_ADDR"] = "203.0.113.50"
    with run_on_commit():
        page_sign_in(roaming, buyer.username)
        page_sign_in(browser("198.51.100.99"), buyer.username)
    assert mails("security.new_device") == []

    thief = browser("192.0.2.66")
    with run_on_commit():
        assert page_sign_in(thief, buyer.username).status_code == 302
    [alert] = mails("security.new_device")
    assert alert.to == [buyer.email] and "192.0.2.66" in alert.body
    assert SignIn.objects.filter(user=buyer, new_place=True).count() == 1
    assert AuditEntry.objects.filter(action="account.new_device", subject_id=str(buyer.pk)).count() == 1

    # The same (now known) device signs in again: no second alert.
    thief.cookies.pop("sessionid", None)
    with run_on_commit():
        page_sign_in(thief, buyer.username)
    assert len(mails("security.new_device")) == 1


def test_an_api_sign_in_from_a_new_network_alerts_too(run_on_commit):
    buyer = factories.user_create(password=PASSWORD)
    with run_on_commit():
        page_sign_in(browser("198.51.100.7"), buyer.username)
        response = Client(REMOTE_ADDR="192.0.2.10").post(
            "/api/v1/auth/token/",
            json.dumps({"email": buyer.email, "password": PASSWORD}),
            content_type="application/json",
        )
    assert response.status_code == 200
    assert len(mails("security.new_device")) == 1


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_not_what_is_recorded(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    buyer = factories.user_create(password=PASSWORD)
    spoofer = Client(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="198.51.100.1")
    page_sign_in(spoofer, buyer.username)
    proxied = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.44")
    page_sign_in(proxied, buyer.username)
    recorded = list(SignIn.objects.filter(user=buyer).order_by("pk").values_list("ip", "network"))
    assert recorded == [("203.0.113.9", "203.0.113.0/24"), ("192.0.2.44", "192.0.2.0/24")]


def test_failed_sign_ins_on_a_real_account_are_recorded_and_unknown_names_are_not():
    buyer = factories.user_create(password=PASSWORD)
    page_sign_in(Client(REMOTE_ADDR="198.51.100.3"), buyer.username, "wrong")
    page_sign_in(Client(REMOTE_ADDR="198.51.100.3"), "nobody-here", "wrong")
    [failed] = SignIn.objects.all()
    assert (failed.user, failed.success, failed.reason) == (buyer, False, "bad_password")


def test_this_wasnt_me_ends_every_session_and_token_and_forces_a_new_password(run_on_commit):
    buyer = factories.user_create(password=PASSWORD)
    with run_on_commit():
        page_sign_in(browser("198.51.100.7"), buyer.username)
    # The thief: a browser session and an API token, from a new place.
    thief = browser("192.0.2.66")
    with run_on_commit():
        page_sign_in(thief, buyer.username)
    token = (
        Client(REMOTE_ADDR="192.0.2.66")
        .post(
            "/api/v1/auth/token/",
            json.dumps({"email": buyer.email, "password": PASSWORD}),
            content_type="application/json",
        )
        .json()["token"]
    )
    assert thief.get("/account/security/").status_code == 200
    assert Client().get("/api/v1/orders/1/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 404
    owner_elsewhere = Client()
    owner_elsewhere.force_login(buyer)
    assert owner_elsewhere.get("/account/security/").status_code == 200

    alert = mails("security.new_device")[0]
    link = link_in(alert, "/accounts/not-me/")
    owner = Client()
    assert owner.get(link).status_code == 200  # a page with one button: a mail scanner changes nothing
    assert UserSession.objects.filter(user=buyer, ended_at__isnull=True).count() == 3
    with run_on_commit():
        assert owner.post(link).status_code == 200

    # Every session is signed out and the token refused, when they are used.
    assert thief.get("/account/security/").status_code == 302
    assert owner_elsewhere.get("/account/security/").status_code == 302
    assert Client().get("/api/v1/orders/1/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 401
    assert not AccountApiToken.objects.filter(user=buyer, revoked_at__isnull=True).exists()
    # The old password no longer works; a reset link was mailed, and it sets a new one.
    buyer.refresh_from_db()
    assert not buyer.has_usable_password()
    assert page_sign_in(Client(), buyer.username).status_code == 200
    reset = link_in(mails("security.password_reset")[0], "/accounts/password/reset/")
    chooser = Client()
    form_page = chooser.get(reset, follow=True)
    assert form_page.context["validlink"]
    new_password = "Another-Horse-88"
    done = chooser.post(form_page.redirect_chain[-1][0], {"new_password1": new_password, "new_password2": new_password})
    assert done.status_code == 302
    assert page_sign_in(Client(), buyer.username, new_password).status_code == 302
    # The link worked once: after the new password it is refused.
    assert owner.post(link).status_code == 400
    assert AuditEntry.objects.filter(action="account.compromise_reported", subject_id=str(buyer.pk)).count() == 1


def test_a_locked_account_gets_one_unlock_mail_and_its_link_lets_the_owner_in(settings, run_on_commit):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5
    settings.LOGIN_FAILURE_LIMIT_PER_ACCOUNT = 6  # the account, whatever the address
    buyer = factories.user_create(password=PASSWORD)
    with run_on_commit():
        # A botnet: one guess from each of six addresses.
        statuses = [
            page_sign_in(Client(REMOTE_ADDR=f"192.0.2.{i}"), buyer.username, "guess").status_code for i in range(1, 8)
        ]
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    # The owner, from home, is locked out too ...
    assert page_sign_in(Client(REMOTE_ADDR="198.51.100.7"), buyer.email).status_code == 429
    # ... and got exactly one unlock mail, whose link lets them in.
    [message] = mails("security.locked_out")
    link = link_in(message, "/accounts/unlock/")
    assert Client().post(link).status_code == 302
    assert page_sign_in(Client(REMOTE_ADDR="198.51.100.7"), buyer.email).status_code == 302
    assert AuditEntry.objects.filter(action="account.unlocked", subject_id=str(buyer.pk)).exists()
    assert Client().post("/accounts/unlock/forged-token/").status_code == 400


def test_signing_in_by_e_mail_and_by_username_share_one_lockout_budget(settings, run_on_commit):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 4
    buyer = factories.user_create(password=PASSWORD)
    client = Client(REMOTE_ADDR="198.51.100.30")
    names = [buyer.username, buyer.email, buyer.email.upper(), buyer.username]
    with run_on_commit():
        assert [page_sign_in(client, name, "nope").status_code for name in names] == [200, 200, 200, 429]
    assert len(mails("security.locked_out")) == len(mail.outbox) == 1
