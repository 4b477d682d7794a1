"""Sign-up (page and `POST /api/v1/auth/signup/`) and `POST /api/v1/auth/token/` behind the risk engine:
account farming from one address is challenged through the real HTTP API, honest sign-ups pass, the
page answers a challenge with a captcha, and every decision names the account it let in."""

import json
import re

import pytest
from captcha.models import CaptchaStore
from django.test import Client

from accounts.models import AccountApiToken, SignIn, User
from risk.models import BlockEntry, Decision
from tests import factories
from tests.accounts.helpers import PASSWORD
from tests.risk.conftest import rule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("default_rules")]


def api_signup(client: Client, email: str):
    return client.post(
        "/api/v1/auth/signup/", data=json.dumps({"email": email, "password": PASSWORD}), content_type="application/json"
    )


def token_post(client: Client, body):
    return client.post("/api/v1/auth/token/", data=json.dumps(body), content_type="application/json")


def test_thirty_signups_from_one_ip_through_the_api_are_challenged_by_the_tenth():
    farm = Client(REMOTE_ADDR="203.0.113.99")
    answers = []
    for n in range(30):
        response = api_signup(farm, f"farm{n}@example.com")
        answers.append(response.status_code)
        if response.status_code == 201:
            decision = Decision.objects.get(event="signup", email=f"farm{n}@example.com")
            assert (decision.subject_type, decision.subject_id) == ("user", str(response.json()["id"]))
        else:
            body = response.json()
            assert (response.status_code, body["code"]) == (403, "challenge_required"), body
            assert Decision.objects.get(pk=body["decision"]).outcome == "challenge"
            assert not User.objects.filter(email=f"farm{n}@example.com").exists()
    first_refused = answers.index(403)
    assert first_refused < 10, answers
    assert set(answers[first_refused:]) == {403}
    assert User.objects.filter(email__startswith="farm").count() == first_refused


def test_ordinary_signups_each_from_their_own_address_pass():
    for n in range(30):
        response = api_signup(Client(REMOTE_ADDR=f"198.51.{n}.10"), f"person{n}@example.com")
        assert response.status_code == 201, response.content
    assert set(Decision.objects.filter(event="signup").values_list("outcome", flat=True)) == {"allow"}


def test_a_blocked_address_cannot_sign_up_and_is_told_neutrally():
    BlockEntry.objects.create(kind="ip", value="192.0.2.0/24", reason="account farm")
    response = api_signup(Client(REMOTE_ADDR="192.0.2.44"), "farmer@example.com")
    body = response.json()
    assert (response.status_code, body["code"]) == (403, "risk_blocked")
    assert "farm" not in body["detail"]  # nothing about which rule fired
    assert Decision.objects.get(pk=body["decision"]).reasons[0]["reason"] == "account farm"
    assert not User.objects.filter(email="farmer@example.com").exists()


def _captcha_answer(page: str) -> dict[str, str]:
    key = re.search(r'name="challenge-captcha_0"[^>]*value="([0-9a-f]+)"', page) or re.search(
        r'value="([0-9a-f]+)"[^>]*name="challenge-captcha_0"', page
    )
    assert key, page
    return {"challenge-captcha_0": key[1], "challenge-captcha_1": CaptchaStore.objects.get(hashkey=key[1]).response}


def test_the_signup_page_shows_a_captcha_on_challenge_and_signs_up_once_it_is_answered():
    for n in range(9):  # nine sign-ups from this address already (the API, same address)
        assert api_signup(Client(REMOTE_ADDR="203.0.113.50"), f"early{n}@example.com").status_code == 201
    browser = Client(REMOTE_ADDR="203.0.113.50")
    form = {"email": "tenth@example.com", "password": PASSWORD, "language": "en"}
    challenged = browser.post("/accounts/signup/", form)
    assert challenged.status_code == 403
    page = challenged.content.decode()
    assert 'data-testid="challenge"' in page and "challenge-captcha_1" in page
    assert not User.objects.filter(email="tenth@example.com").exists()

    wrong = browser.post("/accounts/signup/", {**form, **_captcha_answer(page), "challenge-captcha_1": "wrong"})
    assert wrong.status_code == 403 and 'data-testid="challenge"' in wrong.content.decode()
    assert not User.objects.filter(email="tenth@example.com").exists()

    passed = browser.post("/accounts/signup/", {**form, **_captcha_answer(wrong.content.decode())})
    assert passed.status_code == 302, passed.content.decode()
    user = User.objects.get(email="tenth@example.com")
    decision = Decision.objects.filter(event="signup", email="tenth@example.com").order_by("-pk").first()
    assert (decision.outcome, decision.challenge_passed, decision.subject_id) == ("challenge", True, str(user.pk))


def test_an_ordinary_signup_on_the_page_sees_no_challenge():
    response = Client(REMOTE_ADDR="198.51.100.77").post(
        "/accounts/signup/", {"email": "plain@example.com", "password": PASSWORD, "language": "en"}
    )
    assert response.status_code == 302
    user = User.objects.get(email="plain@example.com")
    assert Decision.objects.get(event="signup", subject_id=str(user.pk)).outcome == "allow"


# --- POST /api/v1/auth/token/ is a sign-in (`login`) -------------------------------------------------------


def test_the_token_endpoint_is_assessed_as_a_sign_in_and_names_the_account():
    buyer = factories.user_create(password=PASSWORD)
    response = token_post(Client(REMOTE_ADDR="198.51.100.5"), {"email": buyer.email, "password": PASSWORD})
    assert response.status_code == 200, response.content
    decision = Decision.objects.get(event="login")
    assert (decision.outcome, decision.subject_type, decision.subject_id, decision.actor) == (
        "allow",
        "user",
        str(buyer.pk),
        f"user:{buyer.pk}",
    )


def test_a_blocked_sign_in_gets_no_token():
    buyer = factories.user_create(password=PASSWORD)
    BlockEntry.objects.create(kind="email", value=buyer.email, reason="stolen account")
    response = token_post(Client(), {"email": buyer.email, "password": PASSWORD})
    body = response.json()
    assert (response.status_code, body["code"]) == (403, "risk_blocked")
    assert Decision.objects.get(pk=body["decision"]).outcome == "block"
    assert not AccountApiToken.objects.exists()
    assert SignIn.objects.get(user=buyer).reason == "risk"


def test_a_challenged_sign_in_needs_the_second_factor():
    rule("login", "account_age_days", "gte", 0, "challenge")
    buyer = factories.user_create(password=PASSWORD)
    refused = token_post(Client(), {"email": buyer.email, "password": PASSWORD})
    assert (refused.status_code, refused.json()["code"]) == (403, "challenge_required")
    assert not AccountApiToken.objects.exists()
    device = factories.totp_device_create(user=buyer)
    answered = token_post(Client(), {"email": buyer.email, "password": PASSWORD, "otp": factories.totp_code(device)})
    assert answered.status_code == 200, answered.content
    assert Decision.objects.filter(event="login", challenge_passed=True, subject_id=str(buyer.pk)).count() == 1
