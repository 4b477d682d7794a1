"""Hoarding: checkout rate limits (API and web form, shared across processes), reservation caps,
a sane quantity cap, key-reveal limits, no-store on every answer showing keys."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.core.cache import cache
from django.db import connection
from django.forms.models import model_to_dict
from django.test import Client
from django.test.utils import CaptureQueriesContext

from escrow.models import KeyReveal, Order, OrderStatus
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db

REDIS_CACHE_URL = os.environ.get("TEST_CACHE_URL", "redis://127.0.0.1:6379/5")


def _redis_missing() -> str | None:
    try:
        redis.Redis.from_url(REDIS_CACHE_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return f"needs Redis at {REDIS_CACHE_URL} (TEST_CACHE_URL) to share a cache between processes"
    return None


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def api_checkout(client: Client, product, *, quantity=1, email="hoarder@example.com", **extra):
    return client.post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": quantity, "email": email},
        content_type="application/json",
        **extra,
    )


def web_checkout(client: Client, product, *, quantity=1, email="hoarder@example.com", **extra):
    return client.post(f"/products/{product.pk}/checkout/", {"quantity": quantity, "email": email}, **extra)


def reserved(product) -> int:
    return CardKey.objects.filter(product=product, status=CardKeyStatus.RESERVED).count()


# --- checkout rate limit ----------------------------------------------------------------------------


def test_api_checkout_is_limited_per_client_with_retry_after(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "3/min"}
    product = factories.product_create(stock=10)
    client = Client()
    for _ in range(3):
        assert api_checkout(client, product).status_code == 201
    refused = api_checkout(client, product)
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled" and refused.json()["detail"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert Order.objects.count() == 3 and reserved(product) == 3


def test_web_checkout_form_is_limited_and_shares_the_budget_with_the_api(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "3/min"}
    product = factories.product_create(stock=10)
    client = Client()
    assert api_checkout(client, product).status_code == 201
    for _ in range(2):
        assert web_checkout(client, product).status_code == 302
    refused = web_checkout(client, product)
    assert refused.status_code == 429
    assert "Too many checkouts from your address" in refused.content.decode()
    assert refused["Retry-After"]
    assert Order.objects.count() == 3 and reserved(product) == 3


def test_spoofed_forwarded_for_from_an_untrusted_peer_does_not_evade_the_limit(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "3/min"}
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    product = factories.product_create(stock=10)
    client = Client(REMOTE_ADDR="203.0.113.9")
    statuses = [api_checkout(client, product, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(1, 6)]
    assert statuses == [201, 201, 201, 429, 429]
    assert set(Order.objects.values_list("checkout_ip", flat=True)) == {"203.0.113.9"}


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "1/min"}
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    product = factories.product_create(stock=10)
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    assert api_checkout(proxy, product, HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.1").status_code == 201
    assert api_checkout(proxy, product, HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 201
    assert api_checkout(proxy, product, HTTP_X_FORWARDED_FOR="7.7.7.7, 198.51.100.1").status_code == 429
    assert sorted(Order.objects.values_list("checkout_ip", flat=True)) == ["198.51.100.1", "198.51.100.2"]


def test_the_limit_holds_across_processes_through_the_shared_redis_cache(settings):
    """Another process (its own interpreter, configured only by CACHE_URL) spends the budget; this
    process, on the same Redis, is refused."""
    if reason := _redis_missing():
        pytest.skip(reason=reason)
    redis.Redis.from_url(REDIS_CACHE_URL).flushdb()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_CACHE_URL}
    }
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "3/min"}
    product = factories.product_create(stock=10)
    # The limit counts in windows of a clock minute: both processes' attempts must fall in one. Late in a
    # minute the other process's start-up could carry this one's attempt into the next (a new window).
    into_minute = time.time() % 60
    if into_minute > 30:
        time.sleep(60.2 - into_minute)
    other = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS],
        cwd=ROOT,
        env={**os.environ, "CACHE_URL": REDIS_CACHE_URL, "CHECKOUT_RATE_LIMIT": "3/min"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(other.stdout.strip().splitlines()[-1]) == [400, 400, 400]  # counted, though invalid
    try:
        refused = api_checkout(Client(), product)
        assert refused.status_code == 429
        assert not Order.objects.exists() and reserved(product) == 0
    finally:
        redis.Redis.from_url(REDIS_CACHE_URL).flushdb()


# The other process sends three malformed checkouts (this test's rows are not committed, so it could
# not buy them anyway): each is counted before it is validated.
OTHER_PROCESS = """
import json, os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.db import connection
from django.forms.models import model_to_dict
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.test.utils import setup_test_environment
setup_test_environment()
c = Client()
print(json.dumps([c.post("/api/v1/orders/", {"product": 1, "quantity": "many", "email": "x@example.com"},
                         content_type="application/json").status_code for _ in range(3)]))
"""


# --- caps on what one buyer may hold unpaid ----------------------------------------------------------


def test_keys_held_unpaid_are_capped_per_email(settings):
    settings.RESERVATION_MAX_KEYS_PER_EMAIL = 4
    product = factories.product_create(stock=10, max_per_order=10)
    client = Client()
    assert api_checkout(client, product, quantity=3, email="Hoarder@example.com").status_code == 201
    refused = api_checkout(client, product, quantity=2, email="hoarder@EXAMPLE.com")
    assert refused.status_code == 409
    assert refused.json()["code"] == "reservation_limit"
    assert Order.objects.count() == 1 and reserved(product) == 3
    # The web form says the same, and reserves nothing either.
    page = web_checkout(client, product, quantity=2, email="hoarder@example.com")
    assert page.status_code == 400 and "unpaid orders" in page.content.decode()
    assert Order.objects.count() == 1 and reserved(product) == 3
    # Another e-mail is not affected, and a paid order no longer counts.
    assert api_checkout(client, product, quantity=2, email="other@example.com").status_code == 201
    factories.pay(Order.objects.get(email="Hoarder@example.com"))
    assert api_checkout(client, product, quantity=2, email="hoarder@example.com").status_code == 201


def test_keys_held_unpaid_are_capped_per_ip(settings):
    settings.RESERVATION_MAX_KEYS_PER_IP = 5
    product = factories.product_create(stock=10, max_per_order=10)
    client = Client(REMOTE_ADDR="203.0.113.20")
    for i in range(5):
        assert api_checkout(client, product, email=f"a{i}@example.com").status_code == 201
    refused = api_checkout(client, product, email="a9@example.com")
    assert (refused.status_code, refused.json()["code"]) == (409, "reservation_limit")
    assert Order.objects.count() == 5 and reserved(product) == 5
    assert api_checkout(Client(REMOTE_ADDR="203.0.113.21"), product, email="b@example.com").status_code == 201


@requires_postgres
def test_the_caps_read_only_the_identities_unpaid_orders_through_their_indexes():
    """The caps' sums find one e-mail's and one address's unpaid orders by index: before, every checkout
    read every unpaid order (a sequential scan once most orders are unpaid)."""
    product = factories.product_create(stock=3)
    placed = factories.order_place(product=product, email="first@example.com").order
    # Many unpaid orders of others, as under load (copies of a real one: only their buyers differ).
    Order.objects.bulk_create(
        [
            Order(
                **{
                    **model_to_dict(placed, exclude=["id", "product", "merchant", "buyer", "coupon"]),
                    "product": product,
                    "merchant": placed.merchant,
                    "email": f"other{i}@example.com",
                    "checkout_ip": f"198.51.{i // 250}.{i % 250 + 1}",
                    "access_token_hash": f"{i:064x}",
                }
            )
            for i in range(2000)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE escrow_order")
    with CaptureQueriesContext(connection) as captured:
        assert api_checkout(Client(REMOTE_ADDR="203.0.113.30"), product, email="c@example.com").status_code == 201
    # The checkout's write is a prepared statement (core.prepared): find the EXECUTE of the one whose
    # text is the order's CTE, and have it explained with the checkout's values.
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE statement LIKE %s", ["% AS WITH held AS %"])
        names = {name for (name,) in cursor.fetchall()}
    write = next(query["sql"] for query in captured.captured_queries if query["sql"].split(" ")[1] in names)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {write}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "escrow_order_unpaid_email" in plan and "escrow_order_unpaid_ip" in plan, plan


def test_one_order_cannot_take_hundreds_of_keys_by_default():
    product = factories.product_create(stock=3, max_per_order=1000)
    refused = api_checkout(Client(), product, quantity=500)
    assert (refused.status_code, refused.json()["code"]) == (400, "bad_quantity")
    assert not Order.objects.exists()


# --- reveals -------------------------------------------------------------------------------------------


def test_key_reveals_are_limited_per_order_and_refused_ones_leave_no_row(settings, run_on_commit):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "key_reveal": "3/min"}
    product = factories.product_create(stock=2)
    with run_on_commit():
        placed = factories.order_place(product=product)
        factories.pay(placed.order)
    token = {"HTTP_X_ORDER_TOKEN": placed.access_token}
    client = Client()
    url = f"/api/v1/orders/{placed.order.pk}/keys/"
    assert [client.get(url, **token).status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get(url, **token)
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled" and refused["Retry-After"]
    # Other addresses share the order's limit: the evidence cannot be flooded from many machines.
    assert Client(REMOTE_ADDR="198.51.100.3").get(url, **token).status_code == 429
    page = Client().get(f"/orders/{placed.order.pk}/t/{placed.access_token}/")
    assert page.status_code == 429 and "Too many" in page.content.decode()
    assert KeyReveal.objects.filter(order=placed.order).count() == 3


# --- no-store wherever keys are shown --------------------------------------------------------------------


def test_every_answer_showing_keys_says_no_store(run_on_commit):
    product = factories.product_create(stock=1)
    with run_on_commit():
        placed = factories.order_place(product=product)
        factories.pay(placed.order)
    order = placed.order
    assert Order.objects.get(pk=order.pk).status == OrderStatus.DELIVERED
    client = Client()
    for url, extra in [
        (f"/orders/{order.pk}/t/{placed.access_token}/", {}),
        (f"/orders/{order.pk}/t/{placed.access_token}/keys/", {}),
        (f"/api/v1/orders/{order.pk}/keys/", {"HTTP_X_ORDER_TOKEN": placed.access_token}),
    ]:
        response = client.get(url, **extra)
        assert response.status_code == 200, url
        assert "no-store" in response["Cache-Control"], url


def test_the_merchant_key_export_says_no_store():
    merchant = factories.merchant_create()
    product = factories.product_create(merchant=merchant, stock=2)
    client = Client()
    device = factories.login_verified(client, merchant.user)
    url = f"/merchant/products/{product.pk}/export/"
    form = client.get(url)
    assert "no-store" in form["Cache-Control"]
    export = client.post(url, {"password": "pw-for-tests-1", "code": factories.totp_code(device)})
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    assert "no-store" in export["Cache-Control"]


def test_a_merchant_cannot_set_a_per_order_maximum_above_the_shops(settings):
    from shop.forms import ProductForm

    data = {"title": "Card", "price": "10.00", "currency": "CNY", "inspection_hours": 24, "low_stock_threshold": 1}
    assert not ProductForm(data={**data, "max_per_order": 500}).is_valid()
    assert ProductForm(data={**data, "max_per_order": settings.ORDER_MAX_QUANTITY}).is_valid()
