"""Every row of the disputes API with its status codes; nobody but the two parties and staff reads a
dispute (404), and a refused request changes nothing."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from accounts import services as accounts_services
from disputes import services
from disputes.models import Dispute, DisputeStatus
from escrow.ledger_checks import ledger_problems
from escrow.models import OrderStatus
from shop import services as shop_services
from tests import factories
from tests.disputes.helpers import delivered, everything, opened

pytestmark = pytest.mark.django_db


def guest(order) -> Client:
    return Client(HTTP_X_ORDER_TOKEN=order.access_token)


def merchant_client(order) -> Client:
    _record, secret = shop_services.merchant_api_token_create_unchecked(
        merchant=order.merchant, name="t", actor=None, now=timezone.now()
    )
    return Client(HTTP_AUTHORIZATION=f"Token {secret}")


def staff_client(user=None) -> Client:
    user = user or factories.user_create(is_staff=True)
    _record, secret = accounts_services.staff_api_token_create_unchecked(user=user, name="t", now=timezone.now())
    return Client(HTTP_AUTHORIZATION=f"Token {secret}")


def post(client: Client, url: str, data=None):
    return client.post(url, data or {}, content_type="application/json")


def status_of(dispute) -> str:
    return Dispute.objects.get(pk=dispute.pk).status


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.content
    assert response.json()["code"] == code, response.json()
    assert set(response.json()) == {"detail", "code"}


# --- POST /api/v1/orders/{id}/disputes/ -------------------------------------------------------------------


def test_guest_opens_a_dispute_with_the_order_token(run_on_commit):
    order = delivered(run_on_commit)
    response = post(guest(order), f"/api/v1/orders/{order.pk}/disputes/", {"reason": "key_invalid", "statement": "Bad"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "status", "deadline"} and body["status"] == "open"
    assert Dispute.objects.get(pk=body["id"]).order_id == order.pk
    order.refresh_from_db()
    assert order.status == OrderStatus.DISPUTED

    again = post(guest(order), f"/api/v1/orders/{order.pk}/disputes/", {"reason": "other", "statement": "x"})
    assert_error(again, 409, "already_disputed")


def test_signed_in_buyer_opens_with_the_session_and_names_keys(run_on_commit):
    buyer = factories.user_create()
    order = delivered(run_on_commit, quantity=2, buyer=buyer)
    key = order.card_keys.order_by("pk").first()
    client = Client()
    client.force_login(buyer)
    response = post(
        client, f"/api/v1/orders/{order.pk}/disputes/", {"reason": "key_used", "statement": "Used", "keys": [key.pk]}
    )
    assert response.status_code == 201, response.content
    assert list(Dispute.objects.get(pk=response.json()["id"]).keys.values_list("pk", flat=True)) == [key.pk]


def test_open_outside_the_window_is_409_and_changes_nothing(run_on_commit):
    order = delivered(run_on_commit)
    before = everything()
    with time_machine.travel(order.inspection_ends_at + timedelta(seconds=1)):
        response = post(guest(order), f"/api/v1/orders/{order.pk}/disputes/", {"reason": "other", "statement": "x"})
    assert_error(response, 409, "outside_window")
    assert everything() == before


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"reason": "bored", "statement": "x"}, "invalid_choice"),
        ({"reason": "other"}, "invalid"),  # statement missing
        ({"reason": "other", "statement": "x" * 2001}, "max_length"),
        ({"reason": "other", "statement": "x", "keys": [0]}, "bad_keys"),
    ],
)
def test_open_with_bad_input_is_400_and_changes_nothing(run_on_commit, data, code):
    order = delivered(run_on_commit)
    before = everything()
    assert_error(post(guest(order), f"/api/v1/orders/{order.pk}/disputes/", data), 400, code)
    assert everything() == before


def test_open_by_a_stranger_is_404(run_on_commit):
    order = delivered(run_on_commit)
    other = delivered(run_on_commit)
    before = everything()
    url = f"/api/v1/orders/{order.pk}/disputes/"
    assert_error(post(guest(other), url, {"reason": "other", "statement": "x"}), 404, "not_found")
    assert_error(post(Client(), url, {"reason": "other", "statement": "x"}), 404, "not_found")
    assert everything() == before


# --- GET /api/v1/disputes/{id}/ and messages ------------------------------------------------------------------


def test_the_parties_and_staff_read_the_dispute_and_nobody_else(run_on_commit):
    dispute = opened(run_on_commit)
    order = dispute.order
    url = f"/api/v1/disputes/{dispute.pk}/"
    for client in (guest(order), merchant_client(order), staff_client()):
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["id"], body["status"], body["deadline_for"]) == (dispute.pk, "open", "merchant")
        assert body["outcome"] == "" and body["messages"] == []
    stranger = factories.user_create()
    signed_in = Client()
    signed_in.force_login(stranger)
    other_order = delivered(run_on_commit)
    for client in (
        Client(),
        signed_in,
        guest(other_order),
        merchant_client(other_order),
        Client(HTTP_AUTHORIZATION="Token cks_staff_nope"),
    ):
        response = client.get(url)
        assert response.status_code in (401, 404), response.content
        assert "statement" not in response.json()
    assert_error(Client().get(url), 404, "not_found")
    assert_error(guest(other_order).get(url), 404, "not_found")
    # A staff token that does not belong to staff any more is refused.
    assert_error(Client(HTTP_AUTHORIZATION="Token cks_staff_nope").get(url), 401, "authentication_failed")


def test_messages_from_each_party_and_a_staff_question(run_on_commit):
    dispute = opened(run_on_commit)
    url = f"/api/v1/disputes/{dispute.pk}/messages/"
    assert post(guest(dispute.order), url, {"body": "From the buyer"}).status_code == 201
    assert post(merchant_client(dispute.order), url, {"body": "From the merchant"}).status_code == 201
    deadline = Dispute.objects.get(pk=dispute.pk).deadline
    asked = post(staff_client(), url, {"body": "Logs?", "question_for": "merchant"})
    assert asked.status_code == 201 and asked.json()["question_for"] == "merchant"
    assert Dispute.objects.get(pk=dispute.pk).deadline > deadline
    messages = guest(dispute.order).get(f"/api/v1/disputes/{dispute.pk}/").json()["messages"]
    assert [(m["role"], m["body"]) for m in messages] == [
        ("buyer", "From the buyer"),
        ("merchant", "From the merchant"),
        ("staff", "Logs?"),
    ]
    before = everything()
    assert_error(post(guest(dispute.order), url, {"body": "x", "question_for": "merchant"}), 400, "bad_question")
    assert_error(post(guest(dispute.order), url, {"body": ""}), 400, "invalid")
    assert_error(post(Client(), url, {"body": "x"}), 404, "not_found")
    assert everything() == before


# --- the buyer's accept / escalate -----------------------------------------------------------------------------------


def test_buyer_accepts_a_replacement(run_on_commit):
    dispute = opened(run_on_commit)
    merchant = merchant_client(dispute.order)
    response = post(merchant, f"/api/v1/merchant/disputes/{dispute.pk}/replace/")
    assert response.status_code == 200 and response.json() == {"status": "replaced"}
    before = everything()
    assert_error(post(merchant, f"/api/v1/disputes/{dispute.pk}/accept/"), 403, "permission_denied")
    assert everything() == before
    response = post(guest(dispute.order), f"/api/v1/disputes/{dispute.pk}/accept/")
    assert response.status_code == 200 and response.json() == {"status": "resolved"}
    assert_error(post(guest(dispute.order), f"/api/v1/disputes/{dispute.pk}/accept/"), 409, "bad_state")
    assert ledger_problems() == []


def test_buyer_escalates_a_contest_and_reopens_only_after_a_replacement(run_on_commit):
    dispute = opened(run_on_commit)
    before = everything()
    assert_error(post(guest(dispute.order), f"/api/v1/disputes/{dispute.pk}/escalate/"), 409, "bad_state")
    assert_error(
        post(guest(dispute.order), f"/api/v1/disputes/{dispute.pk}/reopen/", {"statement": "x"}), 409, "bad_state"
    )
    assert everything() == before
    response = post(
        merchant_client(dispute.order), f"/api/v1/merchant/disputes/{dispute.pk}/contest/", {"statement": "No"}
    )
    assert response.status_code == 200 and response.json() == {"status": "contested"}
    response = post(guest(dispute.order), f"/api/v1/disputes/{dispute.pk}/escalate/")
    assert response.status_code == 200 and response.json() == {"status": "escalated"}


# --- the merchant ----------------------------------------------------------------------------------------------------


def test_merchant_lists_only_their_disputes(run_on_commit):
    mine = opened(run_on_commit)
    opened(run_on_commit)  # another merchant's
    response = merchant_client(mine.order).get("/api/v1/merchant/disputes/")
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [mine.pk]
    assert Client().get("/api/v1/merchant/disputes/").status_code in (401, 403)


def test_merchant_refund_and_another_merchants_dispute_is_404(run_on_commit):
    dispute = opened(run_on_commit)
    other = opened(run_on_commit)
    client = merchant_client(dispute.order)
    before = everything()
    for action in ("replace", "refund", "contest"):
        assert_error(
            post(client, f"/api/v1/merchant/disputes/{other.pk}/{action}/", {"statement": "x"}), 404, "not_found"
        )
    assert_error(post(client, f"/api/v1/merchant/disputes/{dispute.pk}/contest/", {}), 400, "invalid")
    assert_error(
        post(guest(dispute.order), f"/api/v1/merchant/disputes/{dispute.pk}/refund/"), 401, "not_authenticated"
    )
    assert everything() == before
    with run_on_commit():
        response = post(client, f"/api/v1/merchant/disputes/{dispute.pk}/refund/")
    assert response.status_code == 200 and response.json() == {"status": "resolved"}
    assert_error(post(client, f"/api/v1/merchant/disputes/{dispute.pk}/replace/"), 409, "bad_state")
    assert ledger_problems() == []


def test_replace_without_stock_is_409(run_on_commit):
    dispute = opened(run_on_commit, stock=1)
    merchant = merchant_client(dispute.order)
    before = everything()
    assert_error(post(merchant, f"/api/v1/merchant/disputes/{dispute.pk}/replace/"), 409, "out_of_stock")
    assert everything() == before


# --- staff -------------------------------------------------------------------------------------------------------


def test_staff_decide_needs_an_escalated_dispute_and_a_staff_token(run_on_commit):
    dispute = opened(run_on_commit)
    url = f"/api/v1/staff/disputes/{dispute.pk}/decide/"
    decision = {"outcome": "split", "buyer_percent": 40, "reason": "Half-working key."}
    client = staff_client()
    merchant = merchant_client(dispute.order)
    session = Client()
    session.force_login(factories.user_create(is_staff=True))  # no second factor on this session
    before = everything()
    assert_error(post(client, url, decision), 409, "bad_state")
    assert_error(post(merchant, url, decision), 401, "not_authenticated")  # not a staff token
    assert_error(post(guest(dispute.order), url, decision), 401, "not_authenticated")
    assert_error(post(session, url, decision), 403, "permission_denied")
    assert_error(post(client, "/api/v1/staff/disputes/999999/decide/", decision), 404, "not_found")
    assert everything() == before

    services.dispute_contest(dispute_pk=dispute.pk, statement="No", now=timezone.now())
    services.dispute_escalate(dispute_pk=dispute.pk, now=timezone.now())
    before = everything()
    assert_error(post(client, url, {"outcome": "split", "reason": "x"}), 400, "invalid")
    assert_error(post(client, url, {"outcome": "refund", "reason": ""}), 400, "invalid")
    assert_error(post(client, url, {"outcome": "split", "buyer_percent": 101, "reason": "x"}), 400, "max_value")
    assert everything() == before
    with run_on_commit():
        response = post(client, url, decision)
    assert response.status_code == 200 and response.json() == {"status": "resolved"}
    assert status_of(dispute) == DisputeStatus.RESOLVED
    body = guest(dispute.order).get(f"/api/v1/disputes/{dispute.pk}/").json()
    assert (body["outcome"], body["buyer_percent"], body["decision_reason"]) == ("split", 40, "Half-working key.")
    assert_error(post(client, url, decision), 409, "bad_state")
    assert ledger_problems() == []


def test_a_verified_staff_session_may_decide(run_on_commit):
    dispute = opened(run_on_commit)
    services.dispute_contest(dispute_pk=dispute.pk, statement="No", now=timezone.now())
    services.dispute_escalate(dispute_pk=dispute.pk, now=timezone.now())
    session = Client()
    factories.login_verified(session, factories.user_create(is_staff=True))
    with run_on_commit():
        response = post(session, f"/api/v1/staff/disputes/{dispute.pk}/decide/", {"outcome": "release", "reason": "ok"})
    assert response.status_code == 200, response.content


def test_the_schema_documents_the_dispute_paths():
    schema = Client().get("/api/schema/?format=json").json()
    for path in (
        "/api/v1/orders/{id}/disputes/",
        "/api/v1/disputes/{id}/",
        "/api/v1/disputes/{id}/messages/",
        "/api/v1/disputes/{id}/accept/",
        "/api/v1/disputes/{id}/escalate/",
        "/api/v1/merchant/disputes/",
        "/api/v1/merchant/disputes/{id}/replace/",
        "/api/v1/merchant/disputes/{id}/refund/",
        "/api/v1/merchant/disputes/{id}/contest/",
        "/api/v1/staff/disputes/{id}/decide/",
    ):
        assert path in schema["paths"], path
    assert "staffToken" in schema["components"]["securitySchemes"]


def test_staff_queue_lists_escalated_disputes_by_deadline_with_overdue_flagged(run_on_commit):
    now = timezone.now()
    late = opened(run_on_commit, now=now - timedelta(days=10))
    soon = opened(run_on_commit)
    opened(run_on_commit)  # still with the merchant: not in the queue
    for dispute, at in ((late, now - timedelta(days=9)), (soon, now)):
        services.dispute_contest(dispute_pk=dispute.pk, statement="No", now=at)
        services.dispute_escalate(dispute_pk=dispute.pk, now=at)
    response = staff_client().get("/api/v1/staff/disputes/")
    assert response.status_code == 200
    assert [(row["id"], row["is_overdue"]) for row in response.json()["results"]] == [
        (late.pk, True),
        (soon.pk, False),
    ]
    assert merchant_client(late.order).get("/api/v1/staff/disputes/").status_code == 401
    assert guest(late.order).get("/api/v1/staff/disputes/").status_code in (401, 403)
