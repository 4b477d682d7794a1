"""The merchant API with `Authorization: Token <token>`."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from shop import services
from shop.models import CardKey, StockUpload
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def merchant():
    return factories.merchant_create(name="API Shop")


@pytest.fixture
def api(merchant):
    _record, secret = services.merchant_api_token_create_unchecked(
        merchant=merchant, name="t", actor=None, now=timezone.now()
    )
    return Client(HTTP_AUTHORIZATION=f"Token {secret}")


def test_lists_only_my_products_with_stock_counts(api, merchant):
    mine = factories.product_create(merchant=merchant, stock=3, price=1999, currency="USD")
    factories.product_create(stock=2)  # someone else's

    body = api.get("/api/v1/merchant/products/").json()

    assert len(body["results"]) == 1 and body["next"] is None  # cursor pages: no count
    assert body["results"][0] == {
        "id": mine.pk,
        "title": mine.title,
        "status": "active",
        "price": "19.99",
        "currency": "USD",
        "category": "",
        "low_stock_threshold": 10,
        "stock": {"available": 3, "reserved": 0, "sold": 0, "revoked": 0},
    }


def test_text_body_upload_answers_202_and_status(api, merchant, django_capture_on_commit_callbacks):
    product = factories.product_create(merchant=merchant, stock=0)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/v1/merchant/products/{product.pk}/stock/?delimiter=comma", data="K1,K2,K1", content_type="text/plain"
        )

    assert response.status_code == 202
    upload_id = response.json()["id"]
    state = api.get(f"/api/v1/merchant/stock-uploads/{upload_id}/").json()
    assert {k: state[k] for k in ("status", "total", "imported", "duplicates", "rejected")} == {
        "status": "done",
        "total": 3,
        "imported": 2,
        "duplicates": 1,
        "rejected": 0,
    }


def test_multipart_file_upload(api, merchant, django_capture_on_commit_callbacks):
    product = factories.product_create(merchant=merchant, stock=0)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/v1/merchant/products/{product.pk}/stock/",
            {"file": SimpleUploadedFile("keys.csv", "甲\n乙\n".encode("gb18030"))},
        )

    assert response.status_code == 202
    assert CardKey.objects.filter(product=product).count() == 2


def test_errors_are_clear_and_import_nothing(api, merchant):
    product = factories.product_create(merchant=merchant, stock=0)
    theirs = factories.product_create(stock=0)
    url = f"/api/v1/merchant/products/{product.pk}/stock/"

    empty = api.post(url, data="", content_type="text/plain")
    binary = api.post(url, data=b"\x00\x01", content_type="application/octet-stream")
    not_mine = api.post(f"/api/v1/merchant/products/{theirs.pk}/stock/", data="K", content_type="text/plain")

    assert (empty.status_code, empty.json()["code"]) == (400, "empty_file")
    assert (binary.status_code, binary.json()["code"]) == (400, "binary_file")
    assert not_mine.status_code == 404
    assert not StockUpload.objects.exists() and not CardKey.objects.exists()


def test_someone_elses_upload_is_404(api):
    theirs = factories.product_create(stock=0)
    other_upload = services.stock_upload_start(
        merchant=theirs.merchant, product_pk=theirs.pk, chunks=[b"K\n"], source="api", actor=None, now=timezone.now()
    )

    assert api.get(f"/api/v1/merchant/stock-uploads/{other_upload.pk}/").status_code == 404


def test_without_a_valid_token_nothing_is_answered():
    assert Client().get("/api/v1/merchant/products/").status_code in (401, 403)
    bad = Client(HTTP_AUTHORIZATION="Token cks_nope").get("/api/v1/merchant/products/")
    assert bad.status_code == 401
    assert bad.json()["code"] == "authentication_failed"


def test_a_pending_merchants_token_is_refused():
    pending = services.merchant_create(user=factories.user_create(), name="Pending", now=timezone.now())
    _record, secret = services.merchant_api_token_create_unchecked(
        merchant=pending, name="t", actor=None, now=timezone.now()
    )

    assert Client(HTTP_AUTHORIZATION=f"Token {secret}").get("/api/v1/merchant/products/").status_code == 403
