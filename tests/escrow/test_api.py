"""The REST API rows of DESIGN.md, as another program would use them."""

import pytest
from django.test import Client

from escrow.ledger_checks import ledger_problems
from escrow.models import KeyReveal, Order, OrderStatus
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return Client()


def test_products_list_and_detail(api):
    product = factories.product_create(stock=3, price=2500, currency="USD", description="Works in the US store.")
    listed = api.get("/api/v1/products/").json()
    assert listed["results"] == [
        {
            "id": product.pk,
            "title": product.title,
            "price": "25.00",
            "currency": "USD",
            "stock": 3,
            "merchant": {"id": product.merchant_id, "name": "Key Store"},
        }
    ]
    detail = api.get(f"/api/v1/products/{product.pk}/").json()
    assert detail["description"] == "Works in the US store."
    assert api.get("/api/v1/products/999999/").status_code == 404


def test_paused_products_and_unapproved_merchants_are_not_listed(api):
    from shop.models import Merchant, Product

    paused = factories.product_create(stock=1)
    Product.objects.filter(pk=paused.pk).update(status="paused")
    pending = factories.product_create(stock=1)
    Merchant.objects.filter(pk=pending.merchant_id).update(status="pending")
    assert api.get("/api/v1/products/").json()["results"] == []
    assert api.get(f"/api/v1/products/{paused.pk}/").status_code == 404


def test_guest_buys_through_the_api(api, run_on_commit):
    product = factories.product_create(stock=2, price=1234)
    response = api.post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": 2, "email": "g@example.com"},
        content_type="application/json",
    )
    assert response.status_code == 201
    created = response.json()
    assert created["status"] == "awaiting_payment"
    assert created["payment"]["gateway"] == "sandbox"
    assert (created["payment"]["amount"], created["payment"]["currency"]) == ("24.68", "CNY")
    assert created["payment"]["pay_url"].startswith("http://testserver/payments/sandbox/pay/")
    token = {"X-Order-Token": created["access_token"]}

    keys = api.get(f"/api/v1/orders/{created['id']}/keys/", headers=token)
    assert (keys.status_code, keys.json()["code"]) == (409, "not_delivered")

    with run_on_commit():
        factories.pay(Order.objects.get(pk=created["id"]))
    detail = api.get(f"/api/v1/orders/{created['id']}/", headers=token).json()
    assert detail["status"] == "delivered"
    assert set(detail) == {"id", "status", "product", "quantity", "amount", "currency", "created_at", "delivered_at"}
    assert detail["amount"] == "24.68" and detail["delivered_at"]

    keys = api.get(f"/api/v1/orders/{created['id']}/keys/", headers=token).json()["keys"]
    assert len(keys) == 2 and len(set(keys)) == 2
    assert KeyReveal.objects.filter(order_id=created["id"], channel="api").count() == 1

    confirmed = api.post(f"/api/v1/orders/{created['id']}/confirm/", headers=token)
    assert confirmed.json() == {"status": "completed"}
    again = api.post(f"/api/v1/orders/{created['id']}/confirm/", headers=token)
    assert (again.status_code, again.json()["code"]) == (409, "bad_state")
    assert ledger_problems() == []


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"quantity": 1, "email": "g@example.com"}, 400, "invalid"),
        ({"product": "P", "quantity": "many", "email": "g@example.com"}, 400, "invalid"),
        ({"product": "P", "quantity": 0, "email": "g@example.com"}, 400, "bad_quantity"),
        ({"product": "P", "quantity": 99, "email": "g@example.com"}, 400, "bad_quantity"),
        ({"product": "P", "quantity": 1, "email": "nope"}, 400, "invalid"),
        ({"product": "P", "quantity": 4, "email": "g@example.com"}, 409, "out_of_stock"),
    ],
)
def test_bad_orders_get_a_clear_error_and_create_nothing(api, payload, status, code):
    product = factories.product_create(stock=3)
    payload = {**payload, "product": product.pk} if "product" in payload else payload
    response = api.post("/api/v1/orders/", payload, content_type="application/json")
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and body["detail"]
    assert Order.objects.count() == 0


def test_unknown_product_is_a_clear_400(api):
    response = api.post(
        "/api/v1/orders/", {"product": 424242, "quantity": 1, "email": "g@example.com"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("product:")


def test_someone_elses_order_answers_404_everywhere(api, run_on_commit):
    mine = factories.order_place(product=factories.product_create(stock=1))
    theirs = factories.order_place(product=factories.product_create(stock=1))
    with run_on_commit():
        factories.pay(mine.order)
        factories.pay(theirs.order)
    for path in ("", "keys/"):
        url = f"/api/v1/orders/{theirs.order.pk}/{path}"
        assert api.get(url).status_code == 404
        assert api.get(url, headers={"X-Order-Token": mine.access_token}).status_code == 404
        assert api.get(url, headers={"X-Order-Token": "guessed"}).status_code == 404
    url = f"/api/v1/orders/{theirs.order.pk}/confirm/"
    assert api.post(url, headers={"X-Order-Token": mine.access_token}).status_code == 404
    assert Order.objects.get(pk=theirs.order.pk).status == OrderStatus.DELIVERED
    assert KeyReveal.objects.count() == 0


@pytest.mark.parametrize("pk", [0, 2**63, 10**30])
def test_an_order_number_no_order_can_have_answers_404(api, pk):
    mine = factories.order_place(product=factories.product_create(stock=1))
    for path in ("", "keys/"):
        response = api.get(f"/api/v1/orders/{pk}/{path}", headers={"X-Order-Token": mine.access_token})
        assert response.status_code == 404, response.content


def test_signed_in_buyer_reads_own_order_by_session(run_on_commit):
    buyer = factories.user_create()
    stranger = factories.user_create()
    placed = factories.order_place(product=factories.product_create(stock=1), buyer=buyer)
    with run_on_commit():
        factories.pay(placed.order)
    client = Client()
    client.force_login(buyer)
    assert client.get(f"/api/v1/orders/{placed.order.pk}/keys/").status_code == 200
    client.force_login(stranger)
    assert client.get(f"/api/v1/orders/{placed.order.pk}/keys/").status_code == 404


def test_schema_and_docs_are_served(api):
    schema = api.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/orders/{id}/keys/" in schema.content
    docs = api.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()


PLAIN = {"product": 7, "quantity": 2, "email": "buyer@example.com"}


@pytest.mark.parametrize(
    "body",
    [
        PLAIN,
        PLAIN | {"coupon": ""},
        PLAIN | {"coupon": "  SPRING10 "},
        PLAIN | {"coupon": "X" * 32},
        PLAIN | {"coupon": "X" * 33},
        PLAIN | {"coupon": " " + "X" * 32 + " "},
        PLAIN | {"coupon": "A\x00B"},
        PLAIN | {"coupon": None},
        PLAIN | {"coupon": 5},
        PLAIN | {"coupon": "优惠"},
        PLAIN | {"unknown": "ignored"},
        PLAIN | {"gateway": "sandbox"},
        PLAIN | {"pay_method": "wap"},
        PLAIN | {"product": "7"},
        PLAIN | {"product": True},
        PLAIN | {"product": 7.0},
        PLAIN | {"product": -1, "quantity": 0},
        PLAIN | {"product": 2**70},
        PLAIN | {"quantity": None},
        PLAIN | {"email": " buyer@example.com"},
        PLAIN | {"email": "BUYER@Example.COM"},
        PLAIN | {"email": "not an address"},
        PLAIN | {"email": ""},
        PLAIN | {"email": "a@localhost"},
        PLAIN | {"email": "käufer@example.com"},
        PLAIN | {"email": "b@\ud800.com"},
        PLAIN | {"email": "a" * 300 + "@example.com"},
        {"product": 7, "quantity": 2},
        {"quantity": 2, "email": "buyer@example.com"},
        [],
        "text",
    ],
)
def test_order_create_plain_body_answers_what_the_serializer_would(body):
    """The checkout's lean validation (issue 9) either steps aside or gives the serializer's result."""
    from escrow.api import OrderCreateSerializer, order_create_plain

    plain = order_create_plain(body)
    serializer = OrderCreateSerializer(data=body)
    if plain is None:
        return
    assert serializer.is_valid(), serializer.errors
    assert plain == dict(serializer.validated_data)


def test_the_plain_checkout_body_skips_the_serializer():
    from escrow.api import order_create_plain

    assert order_create_plain(PLAIN) == PLAIN | {"coupon": ""}
    assert order_create_plain(PLAIN | {"coupon": " SPRING10 "}) == PLAIN | {"coupon": "SPRING10"}
