"""`Idempotency-Key` on the merchant API: replay, mismatch, in progress, expiry, and a threaded race on
PostgreSQL; and the API's rate limits per token and per client IP."""

import threading
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone

from core.idempotency import IdempotencyRefused, idempotency_claim, idempotency_keys_purge
from core.models import IdempotencyKey
from escrow import services as escrow_services
from escrow.models import Withdrawal
from shop import services as shop_services
from shop.models import Product, StockUpload
from tests import factories
from tests.conftest import requires_postgres
from tests.merchant_api_helpers import post_json, token_client

NEW_PRODUCT = {"title": "Steam 100", "price": "19.90", "currency": "CNY"}


@pytest.fixture
def merchant(db):
    return factories.merchant_create(name="API Shop")


def funded(run_on_commit, merchant, settings):
    settings.RESERVE_PERCENT = 0
    settings.WITHDRAWAL_MINIMUM = 1000
    product = factories.product_create(merchant=merchant, stock=1, price=10000)
    with run_on_commit():
        order = factories.order_delivered(product=product)
    escrow_services.order_confirm_receipt(order=order, now=timezone.now())
    return factories.payout_account_create(merchant=merchant)


@pytest.mark.django_db
def test_a_retried_withdrawal_is_replayed_not_repeated(run_on_commit, merchant, settings):
    payout = funded(run_on_commit, merchant, settings)
    device = factories.totp_device_create(user=merchant.user)
    api = token_client(merchant)
    body = {"amount": "50.00", "currency": "CNY", "payout_account": payout.pk, "otp": factories.totp_code(device)}

    first = post_json(api, "/api/v1/merchant/withdrawals/", body, **{"Idempotency-Key": "w-1"})
    # The same request again (the code in it is spent: only a replay can answer 201).
    second = post_json(api, "/api/v1/merchant/withdrawals/", body, **{"Idempotency-Key": "w-1"})

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert Withdrawal.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422_and_does_nothing(merchant):
    api = token_client(merchant)

    first = post_json(api, "/api/v1/merchant/products/", NEW_PRODUCT, **{"Idempotency-Key": "p-1"})
    other = post_json(
        api, "/api/v1/merchant/products/", {**NEW_PRODUCT, "price": "29.90"}, **{"Idempotency-Key": "p-1"}
    )
    reordered = api.post(
        "/api/v1/merchant/products/",
        data='{"currency": "CNY", "price": "19.90",  "title": "Steam 100"}',
        content_type="application/json",
        headers={"Idempotency-Key": "p-1"},
    )

    assert first.status_code == 201
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_mismatch")
    assert reordered.status_code == 201 and reordered.json() == first.json()  # same data, other bytes
    assert Product.objects.count() == 1


@pytest.mark.django_db
def test_keys_are_per_caller(merchant):
    mine, theirs = token_client(merchant), token_client(factories.merchant_create())

    a = post_json(mine, "/api/v1/merchant/products/", NEW_PRODUCT, **{"Idempotency-Key": "k"})
    b = post_json(theirs, "/api/v1/merchant/products/", NEW_PRODUCT, **{"Idempotency-Key": "k"})

    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


@pytest.mark.django_db
def test_a_refusal_is_stored_and_replayed_too(merchant):
    api = token_client(merchant)
    bad = {**NEW_PRODUCT, "price": "0"}

    first = post_json(api, "/api/v1/merchant/products/", bad, **{"Idempotency-Key": "bad-1"})
    second = post_json(api, "/api/v1/merchant/products/", bad, **{"Idempotency-Key": "bad-1"})

    assert first.status_code == second.status_code == 400
    assert second.json() == first.json() and second["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_while_the_first_runs_the_second_is_409(merchant):
    now = timezone.now()
    idempotency_claim(caller="user:1", key="k", fingerprint="f", now=now)

    with pytest.raises(IdempotencyRefused) as refused:
        idempotency_claim(caller="user:1", key="k", fingerprint="f", now=now)
    assert (refused.value.code, refused.value.status) == ("idempotency_in_progress", 409)
    with pytest.raises(IdempotencyRefused) as mismatch:
        idempotency_claim(caller="user:1", key="k", fingerprint="g", now=now)
    assert (mismatch.value.code, mismatch.value.status) == ("idempotency_mismatch", 422)


@pytest.mark.django_db
def test_after_24_hours_the_key_is_free_again(merchant):
    api = token_client(merchant)
    first = post_json(api, "/api/v1/merchant/products/", NEW_PRODUCT, **{"Idempotency-Key": "old"})
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))

    again = post_json(api, "/api/v1/merchant/products/", NEW_PRODUCT, **{"Idempotency-Key": "old"})

    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    assert not again.has_header("Idempotent-Replayed")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotency_keys_purge(now=timezone.now()) == 1 and not IdempotencyKey.objects.exists()
    from config.celery import app
    from core.tasks import idempotency_keys_purge_task

    assert app.conf.beat_schedule["core.idempotency_keys_purge"]["task"] == idempotency_keys_purge_task.name


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "naïve"])
def test_a_bad_key_is_400_and_does_nothing(merchant, key):
    response = post_json(token_client(merchant), "/api/v1/merchant/products/", NEW_PRODUCT, **{"Idempotency-Key": key})
    assert (response.status_code, response.json()["code"]) == (400, "bad_idempotency_key")
    assert not Product.objects.exists()


@pytest.mark.django_db
def test_a_retried_stock_upload_imports_once(merchant, django_capture_on_commit_callbacks):
    product = factories.product_create(merchant=merchant, stock=0)
    api = token_client(merchant, scopes=["stock"])
    url = f"/api/v1/merchant/products/{product.pk}/stock/"

    with django_capture_on_commit_callbacks(execute=True):
        first = api.post(url, data="K1\nK2\n", content_type="text/plain", headers={"Idempotency-Key": "u"})
        second = api.post(url, data="K1\nK2\n", content_type="text/plain", headers={"Idempotency-Key": "u"})
        other = api.post(url, data="K3\n", content_type="text/plain", headers={"Idempotency-Key": "u"})

    assert first.status_code == second.status_code == 202 and first.json()["id"] == second.json()["id"]
    assert other.status_code == 422
    assert StockUpload.objects.count() == 1
    assert StockUpload.objects.get().imported == 2


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_identical_requests_at_the_same_moment_do_the_work_once(monkeypatch):
    """Both requests are in flight together (the work is slowed so the second arrives while the first
    runs): the unique (caller, key) claim lets one through; the other answers 409 in progress (or the
    replay, if it came after). Without the claim there would be two products."""
    merchant = factories.merchant_create()
    _record, secret = shop_services.merchant_api_token_create_unchecked(
        merchant=merchant, name="t", actor=None, now=timezone.now()
    )
    real_create = shop_services.product_create

    def slow_create(**kwargs):
        time.sleep(0.3)
        return real_create(**kwargs)

    monkeypatch.setattr(shop_services, "product_create", slow_create)
    start = threading.Barrier(2)
    answers = []

    def call():
        try:
            start.wait()
            client = Client(HTTP_AUTHORIZATION=f"Token {secret}")
            answers.append(post_json(client, "/api/v1/merchant/products/", NEW_PRODUCT, **{"Idempotency-Key": "race"}))
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    codes = sorted(response.status_code for response in answers)
    assert codes in ([201, 409], [201, 201]), [r.content for r in answers]
    assert Product.objects.filter(merchant=merchant).count() == 1
    assert IdempotencyKey.objects.get().response_code == 201


# --- rate limits ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_per_token_limit_answers_429_with_retry_after(merchant, settings):
    cache.clear()
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "api_token": "2/min", "api_ip": "100/min"}
    api, other = token_client(merchant), token_client(merchant)

    answers = [api.get("/api/v1/merchant/products/") for _ in range(3)]

    assert [r.status_code for r in answers] == [200, 200, 429]
    assert answers[2].json()["code"] == "throttled" and int(answers[2]["Retry-After"]) >= 1
    assert other.get("/api/v1/merchant/products/").status_code == 200  # another token has its own


@pytest.mark.django_db
def test_per_address_limit_holds_across_tokens(merchant, settings):
    cache.clear()
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "api_token": "100/min", "api_ip": "2/min"}
    clients = [token_client(merchant) for _ in range(3)]

    codes = [client.get("/api/v1/merchant/products/").status_code for client in clients]
    elsewhere = token_client(merchant, REMOTE_ADDR="203.0.113.9").get("/api/v1/merchant/products/")

    assert codes == [200, 200, 429]
    assert elsewhere.status_code == 200
