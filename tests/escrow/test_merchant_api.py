"""The merchant API's orders and money: the caller's own only (404 otherwise), never a key, bad input
changes nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone

from escrow import services as escrow_services
from escrow import withdrawals
from escrow.models import Order, OrderStatus, PayoutAccount, Refund, Withdrawal
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.merchant_api_helpers import post_json, token_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.RESERVE_PERCENT = 0
    settings.WITHDRAWAL_MINIMUM = 1000


@pytest.fixture
def merchant():
    return factories.merchant_create(name="API Shop")


def delivered(run_on_commit, merchant, *, quantity=1, price=10000):
    product = factories.product_create(merchant=merchant, stock=3, price=price)
    with run_on_commit():
        return factories.order_delivered(product=product, quantity=quantity)


def funded(run_on_commit, merchant):
    """A merchant with 95.00 CNY available (one order of 100.00 released, 5 % fee) and a payout account."""
    order = delivered(run_on_commit, merchant)
    escrow_services.order_confirm_receipt(order=order, now=timezone.now())
    return factories.payout_account_create(merchant=merchant)


# --- orders ---------------------------------------------------------------------------------------------


def test_orders_list_filters_and_never_shows_keys(run_on_commit, merchant):
    order = delivered(run_on_commit, merchant)
    waiting = factories.order_place(product=order.product).order
    delivered(run_on_commit, factories.merchant_create())  # someone else's
    api = token_client(merchant, scopes=["orders"])

    everything = api.get("/api/v1/merchant/orders/").json()["results"]
    only_delivered = api.get("/api/v1/merchant/orders/?status=delivered").json()["results"]
    later = (timezone.now() + timedelta(minutes=1)).isoformat()
    none_since = api.get("/api/v1/merchant/orders/", {"since": later}).json()["results"]
    today = api.get("/api/v1/merchant/orders/", {"since": timezone.now().date().isoformat()}).json()["results"]

    assert [o["id"] for o in everything] == [waiting.pk, order.pk]
    assert [o["id"] for o in only_delivered] == [order.pk]
    assert none_since == [] and len(today) == 2
    detail = api.get(f"/api/v1/merchant/orders/{order.pk}/")
    assert detail.status_code == 200
    key = CardKey.objects.get(order=order)
    assert detail.json()["keys"] == [{"id": key.pk, "status": "sold"}]
    assert b"KEY-" not in detail.content and b"KEY-" not in api.get("/api/v1/merchant/orders/").content


@pytest.mark.parametrize("query", ["status=nope", "since=yesterday"])
def test_bad_order_filters_are_400(merchant, query):
    response = token_client(merchant).get(f"/api/v1/merchant/orders/?{query}")
    assert response.status_code == 400 and set(response.json()) == {"detail", "code"}


def test_someone_elses_order_is_404_and_cannot_be_refunded(run_on_commit, merchant):
    theirs = delivered(run_on_commit, factories.merchant_create())
    unpaid = factories.order_place(product=factories.product_create(stock=1)).order
    api = token_client(merchant)

    assert api.get(f"/api/v1/merchant/orders/{theirs.pk}/").status_code == 404
    assert post_json(api, f"/api/v1/merchant/orders/{theirs.pk}/refund/", {}).status_code == 404
    assert post_json(api, f"/api/v1/merchant/orders/{unpaid.pk}/refund/", {}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == OrderStatus.DELIVERED and not Refund.objects.exists()


def test_refund_some_keys_then_the_order_is_settled(run_on_commit, merchant):
    order = delivered(run_on_commit, merchant, quantity=2)
    first, _second = CardKey.objects.filter(order=order).order_by("pk")
    api = token_client(merchant, scopes=["orders"])

    response = post_json(api, f"/api/v1/merchant/orders/{order.pk}/refund/", {"keys": [first.pk]})

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["amount"], body["currency"], body["keys"]) == ("100.00", "CNY", [first.pk])
    order.refresh_from_db()
    first.refresh_from_db()
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    assert first.status == CardKeyStatus.AVAILABLE  # never shown, never exported: back on sale
    # The rest may be refunded later (a partly refunded order can still become refunded), then nothing.
    rest = post_json(api, f"/api/v1/merchant/orders/{order.pk}/refund/", {})
    assert rest.status_code == 201, rest.content
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED and Refund.objects.count() == 2
    again = post_json(api, f"/api/v1/merchant/orders/{order.pk}/refund/", {})
    assert again.status_code == 409 and Refund.objects.count() == 2


def test_full_refund_revoking_the_keys(run_on_commit, merchant):
    order = delivered(run_on_commit, merchant)
    api = token_client(merchant)

    response = post_json(api, f"/api/v1/merchant/orders/{order.pk}/refund/", {"return_to_stock": False})

    assert response.status_code == 201
    assert Order.objects.get(pk=order.pk).status == OrderStatus.REFUNDED
    assert CardKey.objects.get(order=order).status == CardKeyStatus.REVOKED


@pytest.mark.parametrize("body", [{"keys": [999999]}, {"keys": []}, {"keys": ["x"]}, {"return_to_stock": "maybe"}])
def test_a_bad_refund_is_400_and_changes_nothing(run_on_commit, merchant, body):
    order = delivered(run_on_commit, merchant)
    api = token_client(merchant)

    response = post_json(api, f"/api/v1/merchant/orders/{order.pk}/refund/", body)

    assert response.status_code == 400, response.content
    assert Order.objects.get(pk=order.pk).status == OrderStatus.DELIVERED and not Refund.objects.exists()


# --- money ----------------------------------------------------------------------------------------------


def test_balance_and_statement(run_on_commit, merchant, settings):
    funded(run_on_commit, merchant)
    api = token_client(merchant, scopes=["money"])

    balance = api.get("/api/v1/merchant/balance/").json()
    statement = api.get("/api/v1/merchant/statement/").json()
    today = timezone.localdate().isoformat()
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    bounded = api.get(f"/api/v1/merchant/statement/?from={today}&to={today}").json()["results"]
    future = api.get(f"/api/v1/merchant/statement/?from={tomorrow}").json()["results"]

    assert balance["balances"] == [
        {"currency": "CNY", "available": "95.00", "escrow": "0.00", "reserve": "0.00", "withdrawing": "0.00"}
    ]
    assert balance["reserve_percent"] == str(settings.RESERVE_PERCENT)
    assert {line["amount"] for line in statement["results"]} >= {"95.00"}
    assert len(bounded) == len(statement["results"]) > 0 and future == []


@pytest.mark.parametrize("query", ["from=2026-13-01", "from=2026-02-02&to=2026-02-01"])
def test_a_bad_statement_range_is_400(merchant, query):
    response = token_client(merchant).get(f"/api/v1/merchant/statement/?{query}")
    assert response.status_code == 400 and set(response.json()) == {"detail", "code"}


def test_payout_account_is_masked_after_creation(merchant):
    device = factories.totp_device_create(user=merchant.user)
    api = token_client(merchant, scopes=["money"])

    response = post_json(
        api,
        "/api/v1/merchant/payout-accounts/",
        {"kind": "alipay", "holder": "Li Lei", "number": "13800138000", "otp": factories.totp_code(device)},
    )

    assert response.status_code == 201, response.content
    account = PayoutAccount.objects.get(pk=response.json()["id"], merchant=merchant)
    assert account.number_plaintext() == "13800138000"
    listed = api.get("/api/v1/merchant/payout-accounts/").json()["results"]
    assert listed[0]["number"] == "…8000" and b"13800138000" not in api.get("/api/v1/merchant/payout-accounts/").content


@pytest.mark.parametrize(
    "body", [{"kind": "alipay", "holder": "Li", "number": "1", "otp": "000000"}, {"kind": "alipay", "number": "1"}]
)
def test_a_bad_payout_account_is_400_and_saves_nothing(merchant, body):
    factories.totp_device_create(user=merchant.user)
    response = post_json(token_client(merchant), "/api/v1/merchant/payout-accounts/", body)
    assert response.status_code == 400 and not PayoutAccount.objects.exists()


def test_withdraw(run_on_commit, merchant):
    payout = funded(run_on_commit, merchant)
    device = factories.totp_device_create(user=merchant.user)
    api = token_client(merchant, scopes=["money"])

    response = post_json(
        api,
        "/api/v1/merchant/withdrawals/",
        {"amount": "50.00", "currency": "CNY", "payout_account": payout.pk, "otp": factories.totp_code(device)},
    )

    assert response.status_code == 201, response.content
    withdrawal = Withdrawal.objects.get(pk=response.json()["id"])
    assert response.json() == {"id": withdrawal.pk, "status": "requested"}
    assert withdrawals.available_balance(merchant=merchant, currency="CNY") == 4500
    assert api.get("/api/v1/merchant/withdrawals/").json()["results"][0]["amount"] == "50.00"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"amount": "500.00"}, "insufficient_funds"),
        ({"amount": "1.001"}, "bad_amount"),
        ({"amount": "-5"}, "bad_amount"),
        ({"amount": "abc"}, "bad_amount"),
        ({"payout_account": "theirs"}, "no_payout_account"),
        ({"otp": "000000"}, "bad_code"),
    ],
)
def test_a_bad_withdrawal_is_400_and_moves_nothing(run_on_commit, merchant, change, code):
    payout = funded(run_on_commit, merchant)
    theirs = factories.payout_account_create(merchant=factories.merchant_create())
    device = factories.totp_device_create(user=merchant.user)
    body = {"amount": "50.00", "currency": "CNY", "payout_account": payout.pk, "otp": factories.totp_code(device)}
    body.update(change)
    if body["payout_account"] == "theirs":
        body["payout_account"] = theirs.pk

    response = post_json(token_client(merchant), "/api/v1/merchant/withdrawals/", body)

    assert (response.status_code, response.json()["code"]) == (400, code)
    assert not Withdrawal.objects.exists()
    assert withdrawals.available_balance(merchant=merchant, currency="CNY") == 9500
