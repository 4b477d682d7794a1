"""The merchant API's products, stock and tokens: scopes, the caller's own objects only, bad input
changes nothing."""

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEntry
from shop import services
from shop.models import CardKey, CardKeyStatus, MerchantApiToken, Product, ProductStatus
from tests import factories
from tests.merchant_api_helpers import patch_json, post_json, token_client

pytestmark = pytest.mark.django_db

NEW_PRODUCT = {"title": "Steam 100", "price": "19.90", "currency": "CNY", "description": "**fast**"}


@pytest.fixture
def merchant():
    return factories.merchant_create(name="API Shop")


# --- scopes -------------------------------------------------------------------------------------------


def test_a_call_outside_the_tokens_scope_is_403_scope_and_changes_nothing(merchant):
    product = factories.product_create(merchant=merchant, stock=2)
    reader = token_client(merchant, scopes=["read"])
    stocker = token_client(merchant, scopes=["stock"])

    created = post_json(reader, "/api/v1/merchant/products/", NEW_PRODUCT)
    revoked = post_json(reader, f"/api/v1/merchant/products/{product.pk}/revoke/", {})
    listed = stocker.get("/api/v1/merchant/products/")
    balance = reader.get("/api/v1/merchant/balance/")
    orders = stocker.get("/api/v1/merchant/orders/")
    disputes = reader.get("/api/v1/merchant/disputes/")
    dispute_refund = post_json(reader, "/api/v1/merchant/disputes/1/refund/", {})

    for response in (created, revoked, listed, balance, orders, disputes, dispute_refund):
        assert response.status_code == 403, response.content
        assert response.json()["code"] == "scope"
    assert Product.objects.filter(merchant=merchant).count() == 1
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 2
    # ... and the scope it has works.
    assert reader.get("/api/v1/merchant/products/").status_code == 200


def test_a_verified_session_has_every_scope(merchant):
    client = Client()
    factories.login_verified(client, merchant.user)

    assert client.get("/api/v1/merchant/products/").status_code == 200
    assert client.get("/api/v1/merchant/balance/").status_code == 200
    assert client.get("/api/v1/merchant/orders/").status_code == 200


def test_a_token_object_without_scopes_holds_none(merchant, rf):
    from core.scopes import ScopeRequired

    class View:
        required_scopes = {"GET": "read"}

    request = rf.get("/")
    request.auth = object()  # a token some other app made, without `scopes`
    assert ScopeRequired().has_permission(request, View()) is False
    request.auth = type("Token", (), {"scopes": ["read"]})()
    assert ScopeRequired().has_permission(request, View()) is True
    request.auth = None  # a session
    assert ScopeRequired().has_permission(request, View()) is True


# --- products -------------------------------------------------------------------------------------------


def test_create_a_product(merchant):
    api = token_client(merchant, scopes=["stock"])

    response = post_json(api, "/api/v1/merchant/products/", {**NEW_PRODUCT, "status": "paused"})

    assert response.status_code == 201, response.content
    body = response.json()
    product = Product.objects.get(pk=body["id"], merchant=merchant)
    assert (product.price, product.status, product.title) == (1990, ProductStatus.PAUSED, "Steam 100")
    assert "<strong>fast</strong>" in product.description_html
    assert body["price"] == "19.90" and body["stock"]["available"] == 0


@pytest.mark.parametrize(
    "change",
    [
        {"price": "0"},
        {"price": "1.234"},
        {"currency": "XXX"},
        {"title": "two\nlines"},
        {"title": ""},
        {"inspection_hours": 0},
        {"max_per_order": 10_000},
    ],
)
def test_bad_product_input_is_400_and_creates_nothing(merchant, change):
    api = token_client(merchant)

    response = post_json(api, "/api/v1/merchant/products/", {**NEW_PRODUCT, **change})

    assert response.status_code == 400, response.content
    assert set(response.json()) == {"detail", "code"}
    assert not Product.objects.exists()


def test_get_and_patch_a_product_pause_and_resume(merchant):
    product = factories.product_create(merchant=merchant, stock=3, price=1000)
    api = token_client(merchant)
    url = f"/api/v1/merchant/products/{product.pk}/"

    assert api.get(url).json()["stock"]["available"] == 3
    paused = patch_json(api, url, {"status": "paused", "price": "12.50", "low_stock_threshold": 2})
    again = patch_json(api, url, {"status": "paused"})  # already paused: no change, no error
    resumed = patch_json(api, url, {"status": "active"})

    assert paused.status_code == 200, paused.content
    assert (paused.json()["status"], paused.json()["price"], paused.json()["low_stock_threshold"]) == (
        "paused",
        "12.50",
        2,
    )
    assert again.status_code == 200 and again.json()["status"] == "paused"
    assert resumed.json()["status"] == "active"
    assert AuditEntry.objects.filter(action="product.paused", subject_id=str(product.pk)).count() == 1


def test_a_bad_patch_changes_nothing(merchant):
    product = factories.product_create(merchant=merchant, stock=1, price=1000)
    api = token_client(merchant)

    response = patch_json(
        api, f"/api/v1/merchant/products/{product.pk}/", {"status": "paused", "title": "x", "price": "-1"}
    )

    assert response.status_code == 400
    product.refresh_from_db()
    assert (product.status, product.price) == ("active", 1000) and product.title != "x"


def test_someone_elses_product_is_404(merchant):
    theirs = factories.product_create(stock=2)
    api = token_client(merchant)

    assert api.get(f"/api/v1/merchant/products/{theirs.pk}/").status_code == 404
    assert patch_json(api, f"/api/v1/merchant/products/{theirs.pk}/", {"status": "paused"}).status_code == 404
    assert post_json(api, f"/api/v1/merchant/products/{theirs.pk}/revoke/", {}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "active"
    assert CardKey.objects.filter(product=theirs, status=CardKeyStatus.AVAILABLE).count() == 2


def test_products_list_is_cursor_paginated(merchant):
    for _ in range(3):
        factories.product_create(merchant=merchant, stock=0)
    api = token_client(merchant, scopes=["read"])

    first = api.get("/api/v1/merchant/products/?page_size=2").json()
    second = Client(HTTP_AUTHORIZATION=api.defaults["HTTP_AUTHORIZATION"]).get(first["next"]).json()

    assert len(first["results"]) == 2 and first["previous"] is None
    assert len(second["results"]) == 1 and second["next"] is None
    ids = [p["id"] for p in first["results"] + second["results"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3


# --- revoke -------------------------------------------------------------------------------------------


def test_revoke_listed_keys_then_all(merchant):
    product = factories.product_create(merchant=merchant, stock=0)
    services.keys_import_batch(product=product, keys=["AAA-1", "BBB-2", "CCC-3"], now=timezone.now())
    api = token_client(merchant, scopes=["stock"])
    url = f"/api/v1/merchant/products/{product.pk}/revoke/"

    some = post_json(api, url, {"keys": ["BBB-2", "not-there"]})
    rest = post_json(api, url, {})

    assert (some.status_code, some.json()) == (200, {"revoked": 1})
    assert rest.json() == {"revoked": 2}
    assert not CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).exists()


def test_revoke_with_an_empty_list_is_400_and_revokes_nothing(merchant):
    product = factories.product_create(merchant=merchant, stock=2)
    api = token_client(merchant)

    response = post_json(api, f"/api/v1/merchant/products/{product.pk}/revoke/", {"keys": []})

    assert response.status_code == 400
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 2


# --- tokens ---------------------------------------------------------------------------------------------


def test_create_a_scoped_token_with_a_fresh_code_and_use_it(merchant):
    device = factories.totp_device_create(user=merchant.user)
    api = token_client(merchant)

    response = post_json(
        api,
        "/api/v1/merchant/tokens/",
        {"name": "sync", "scopes": ["stock", "read"], "otp": factories.totp_code(device)},
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["scopes"] == ["read", "stock"] and body["token"].startswith("cks_")
    assert MerchantApiToken.objects.get(pk=body["id"]).scopes == ["read", "stock"]
    new = Client(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert new.get("/api/v1/merchant/products/").status_code == 200
    assert new.get("/api/v1/merchant/balance/").json()["code"] == "scope"
    listed = api.get("/api/v1/merchant/tokens/").json()["results"]
    assert {t["id"] for t in listed} == set(
        MerchantApiToken.objects.filter(merchant=merchant).values_list("pk", flat=True)
    )
    assert all("token" not in t and "digest" not in t for t in listed)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "scopes": ["read"], "otp": "000000"}, "bad_code"),
        ({"name": "x", "scopes": ["admin"], "otp": "000000"}, "invalid_choice"),
        ({"name": "x", "scopes": [], "otp": "000000"}, "empty"),
        ({"name": "x", "scopes": ["read"]}, "invalid"),
    ],
)
def test_a_bad_token_request_is_400_and_creates_nothing(merchant, body, code):
    factories.totp_device_create(user=merchant.user)
    api = token_client(merchant)

    response = post_json(api, "/api/v1/merchant/tokens/", body)

    assert (response.status_code, response.json()["code"]) == (400, code)
    assert MerchantApiToken.objects.filter(merchant=merchant).count() == 1


def test_managing_tokens_needs_a_token_with_every_scope(merchant):
    device = factories.totp_device_create(user=merchant.user)
    partial = token_client(merchant, scopes=["read", "stock", "orders"])
    other = MerchantApiToken.objects.get(merchant=merchant)

    made = post_json(
        partial, "/api/v1/merchant/tokens/", {"name": "x", "scopes": ["read"], "otp": factories.totp_code(device)}
    )
    deleted = partial.delete(f"/api/v1/merchant/tokens/{other.pk}/")

    assert (made.status_code, made.json()["code"]) == (403, "scope")
    assert (deleted.status_code, deleted.json()["code"]) == (403, "scope")
    assert MerchantApiToken.objects.filter(merchant=merchant, revoked_at__isnull=True).count() == 1


def test_revoke_a_token_and_someone_elses_is_404(merchant):
    api = token_client(merchant)
    victim_record, victim_secret = services.merchant_api_token_create_unchecked(
        merchant=merchant, name="old", actor=None, now=timezone.now(), scopes=["read"]
    )
    theirs, _secret = services.merchant_api_token_create_unchecked(
        merchant=factories.merchant_create(), name="theirs", actor=None, now=timezone.now()
    )

    assert api.delete(f"/api/v1/merchant/tokens/{theirs.pk}/").status_code == 404
    assert api.delete(f"/api/v1/merchant/tokens/{victim_record.pk}/").status_code == 204

    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert Client(HTTP_AUTHORIZATION=f"Token {victim_secret}").get("/api/v1/merchant/products/").status_code == 401


def test_the_merchant_area_creates_a_token_with_the_chosen_scopes(merchant):
    client = Client()
    device = factories.login_verified(client, merchant.user)

    response = client.post("/merchant/tokens/", {"name": "ro", "scopes": ["read"], "code": factories.totp_code(device)})

    assert response.status_code == 200
    assert MerchantApiToken.objects.get(merchant=merchant).scopes == ["read"]
