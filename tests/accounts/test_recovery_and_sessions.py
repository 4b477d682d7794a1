"""Password recovery (never says whether an address is registered), a changed password ending every
session and token, the sessions list with "sign out" (one or all), and the activity file (own rows only)."""

import csv
import io

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts import account_services
from accounts.models import AuditEntry, UserSession
from tests import factories
from tests.accounts.helpers import PASSWORD, link_in, mails
from tests.disputes.helpers import delivered

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "Fresh-Password-91"


def signed_in(user) -> Client:
    client = Client()
    assert client.post("/accounts/login/", {"username": user.username, "password": PASSWORD}).status_code == 302
    return client


def test_the_reset_page_answers_the_same_for_a_registered_and_an_unknown_address(run_on_commit):
    buyer = factories.user_create(password=PASSWORD)
    with run_on_commit():
        known = Client().post("/accounts/password/reset/", {"email": buyer.email.upper()})
        unknown = Client().post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert (
        (known.status_code, known.url) == (unknown.status_code, unknown.url) == (302, "/accounts/password/reset/sent/")
    )
    sent = Client().get(known.url)
    assert b"If the address belongs to an account" in sent.content
    [message] = mails("security.password_reset")
    assert message.to == [buyer.email]
    assert len(mail.outbox) == 1


def test_a_reset_sets_the_password_and_ends_every_session_and_token(run_on_commit):
    buyer = factories.user_create(password=PASSWORD)
    session = signed_in(buyer)
    _record, token = account_services.account_api_token_create(user=buyer, name="script", now=timezone.now())
    with run_on_commit():
        Client().post("/accounts/password/reset/", {"email": buyer.email})
    link = link_in(mails("security.password_reset")[0], "/accounts/password/reset/")
    chooser = Client()
    form_page = chooser.get(link, follow=True)
    weak = chooser.post(form_page.redirect_chain[-1][0], {"new_password1": "123", "new_password2": "123"})
    assert weak.status_code == 200 and weak.context["form"].errors  # the validators speak, nothing changes
    buyer.refresh_from_db()
    assert buyer.check_password(PASSWORD)
    done = chooser.post(form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302
    assert session.get("/account/security/").status_code == 302  # signed out
    assert Client().get("/api/v1/orders/1/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 401
    assert Client().post("/accounts/login/", {"username": buyer.email, "password": NEW_PASSWORD}).status_code == 302
    # The link is single-use.
    assert Client().get(link, follow=True).context["validlink"] is False
    assert AuditEntry.objects.filter(action="account.password_changed", subject_id=str(buyer.pk)).exists()


def test_changing_the_password_ends_every_session_this_one_too(run_on_commit):
    buyer = factories.user_create(password=PASSWORD)
    here, there = signed_in(buyer), signed_in(buyer)
    _record, token = account_services.account_api_token_create(user=buyer, name="script", now=timezone.now())
    wrong = here.post(
        "/accounts/password/change/",
        {"old_password": "not-it", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert wrong.status_code == 200 and here.get("/account/security/").status_code == 200
    changed = here.post(
        "/accounts/password/change/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert changed.status_code == 302
    assert here.get("/account/security/").status_code == 302
    assert there.get("/account/security/").status_code == 302
    assert Client().get("/api/v1/orders/1/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 401


def test_sessions_are_listed_and_signed_out_one_or_all_and_only_their_owner_can(run_on_commit):
    buyer, stranger = factories.user_create(password=PASSWORD), factories.user_create(password=PASSWORD)
    laptop, phone = signed_in(buyer), signed_in(buyer)
    other = signed_in(stranger)
    page = laptop.get("/account/security/")
    sessions = list(page.context["sessions"])
    assert len(sessions) == 2 and {s.user_id for s in sessions} == {buyer.pk}
    phone_row = next(s for s in sessions if s.public_id != page.context["current_session"])
    # A stranger cannot end it (404), and it goes on working.
    assert other.post(f"/account/security/sessions/{phone_row.public_id}/end/").status_code == 404
    assert phone.get("/account/security/").status_code == 200
    assert laptop.post(f"/account/security/sessions/{phone_row.public_id}/end/").status_code == 302
    assert phone.get("/account/security/").status_code == 302
    assert laptop.get("/account/security/").status_code == 200
    # "Sign out everywhere" ends this one too; the stranger's stays.
    assert laptop.post("/account/security/sessions/end-all/").status_code == 302
    assert laptop.get("/account/security/").status_code == 302
    assert other.get("/account/security/").status_code == 200
    assert UserSession.objects.filter(user=stranger, ended_at__isnull=True).count() == 1


def _activity(client: Client) -> list[dict]:
    response = client.get("/account/security/activity.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    text = response.content.decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def test_the_activity_file_holds_the_persons_own_rows_and_nobody_elses(run_on_commit):
    alice, bob = factories.user_create(password=PASSWORD), factories.user_create(password=PASSWORD)
    alices_order, bobs_order = delivered(run_on_commit, buyer=alice), delivered(run_on_commit, buyer=bob)
    alice_client, bob_client = signed_in(alice), signed_in(bob)
    for client, order in ((alice_client, alices_order), (bob_client, bobs_order)):
        assert client.get(f"/api/v1/orders/{order.pk}/keys/").status_code == 200  # a reveal, recorded
    with run_on_commit():
        bob_client.post(
            f"/api/v1/orders/{bobs_order.pk}/disputes/",
            {"reason": "key_invalid", "statement": "Bob's key is dead."},
            content_type="application/json",
        )
    account_services.account_api_token_create(user=bob, name="bob-secret-script", now=timezone.now())

    rows = _activity(alice_client)
    sections = {row["section"] for row in rows}
    assert {"order", "key_reveal", "sign_in"} <= sections
    references = {row["reference"] for row in rows}
    assert f"order {alices_order.pk}" in references
    assert f"order {bobs_order.pk}" not in references
    assert not any("dispute" in row["section"] for row in rows)
    assert "bob-secret-script" not in "".join(row["details"] for row in rows)
    [reveal] = [row for row in rows if row["section"] == "key_reveal"]
    assert reveal["ip"] == "127.0.0.1" and reveal["at_utc"]

    bobs = _activity(bob_client)
    assert {"dispute", "security"} <= {row["section"] for row in bobs}
    assert f"order {alices_order.pk}" not in {row["reference"] for row in bobs}
    assert any("bob-secret-script" in row["details"] for row in bobs)
    # Only a signed-in person gets a file.
    assert Client().get("/account/security/activity.csv").status_code == 302


def test_a_formula_in_the_activity_file_is_neutralised():
    from accounts.hooks import ActivityRow
    from accounts.selectors import activity_csv_write

    out = io.StringIO()
    activity_csv_write(
        rows=[ActivityRow(at=None, section="sign_in", reference="page", what="x", details="=cmd()")], out=out
    )
    assert "'=cmd()" in out.getvalue()


def test_a_password_change_also_revokes_the_merchant_and_staff_tokens_of_the_account():
    from accounts.services import staff_api_token_create_unchecked
    from shop import services as shop_services

    merchant = factories.merchant_create()
    user = merchant.user
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    _m, merchant_token = shop_services.merchant_api_token_create_unchecked(
        merchant=merchant, name="shop script", actor=user, now=timezone.now()
    )
    _s, staff_token = staff_api_token_create_unchecked(user=user, name="arbitration", now=timezone.now())
    assert Client().get("/api/v1/merchant/products/", HTTP_AUTHORIZATION=f"Token {merchant_token}").status_code == 200
    account_services.password_changed(user=user, now=timezone.now(), how="change")
    assert Client().get("/api/v1/merchant/products/", HTTP_AUTHORIZATION=f"Token {merchant_token}").status_code == 401
    assert Client().get("/api/v1/staff/disputes/", HTTP_AUTHORIZATION=f"Token {staff_token}").status_code == 401
    entry = AuditEntry.objects.get(action="account.sessions_ended", subject_id=str(user.pk))
    assert entry.data["tokens"] == 2


def test_signing_out_ends_the_sessions_row():
    buyer = factories.user_create(password=PASSWORD)
    client = signed_in(buyer)
    client.get("/account/security/")
    assert UserSession.objects.filter(user=buyer, ended_at__isnull=True).count() == 1
    assert client.post("/accounts/logout/").status_code == 302
    assert UserSession.objects.filter(user=buyer, ended_at__isnull=True).count() == 0


def test_reset_links_to_one_account_are_limited_and_the_page_does_not_tell(settings, run_on_commit):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "email_link": "2/hour"}
    buyer = factories.user_create(password=PASSWORD)
    with run_on_commit():
        answers = {Client().post("/accounts/password/reset/", {"email": buyer.email}).url for _ in range(4)}
    assert answers == {"/accounts/password/reset/sent/"}
    assert len(mails("security.password_reset")) == 2
