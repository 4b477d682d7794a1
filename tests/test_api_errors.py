"""The API's one error handler: every refusal, limit and state conflict as `{"detail","code"}` with its
status; JSON 404 for any unknown path under /api/v1/; and every code listed in the OpenAPI schema."""

import ast
import inspect
import textwrap
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from core.api import exception_handler
from core.errors import Refused
from core.ratelimit import RateLimited
from core.transitions import StateError
from escrow.models import KeyReveal, Order
from shop import services as shop_services
from shop.models import StockUpload
from tests import factories

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def answer(exc):
    response = exception_handler(exc, {})
    return response.status_code, response.data


# --- the mappings, one by one -------------------------------------------------------------------------


def test_a_refusal_answers_its_class_status_with_its_code():
    class Gone(Refused):
        status_code = 403

    assert answer(Refused("No.", code="nope")) == (400, {"detail": "No.", "code": "nope"})
    assert answer(Gone("Not yours.", code="forbidden")) == (403, {"detail": "Not yours.", "code": "forbidden"})


def test_a_refusal_code_can_carry_its_own_status_and_field():
    class Busy(Refused):
        code_statuses = {"sold_out": 409, "closed": 503}
        code_fields = {"bad_product": "product"}

    assert answer(Busy("Gone.", code="sold_out")) == (409, {"detail": "Gone.", "code": "sold_out"})
    assert answer(Busy("Later.", code="closed")) == (503, {"detail": "Later.", "code": "closed"})
    assert answer(Busy("Which?", code="bad_product")) == (400, {"detail": "product: Which?", "code": "bad_product"})
    assert answer(Busy("Other.", code="other")) == (400, {"detail": "Other.", "code": "other"})


def test_codes_shared_by_every_app_carry_their_status_in_any_refusal():
    from escrow.disputes_front import DisputeRefused
    from escrow.refunds import RefundRefused

    assert answer(RefundRefused("Gone.", code="not_found"))[0] == 404
    assert answer(RefundRefused("Too late.", code="bad_state"))[0] == 409
    assert answer(DisputeRefused("None left.", code="out_of_stock"))[0] == 409
    assert answer(DisputeRefused("Percent?", code="bad_percent"))[0] == 400


def test_rate_limited_answers_429_with_retry_after():
    response = exception_handler(RateLimited("key_reveal", 17), {})
    assert response.status_code == 429
    assert response["Retry-After"] == "17"
    assert response.data["code"] == "throttled" and response.data["detail"]


def test_state_error_answers_409_bad_state():
    status, body = answer(StateError("Order", 1, "completed"))
    assert (status, body["code"]) == (409, "bad_state") and body["detail"]


def test_anything_else_is_left_to_django():
    assert exception_handler(ValueError("a bug"), {}) is None


# --- through the real endpoints -----------------------------------------------------------------------


def test_keys_over_the_reveal_limit_answer_429_and_record_no_reveal(run_on_commit, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "key_reveal": "1/hour"}
    product = factories.product_create(stock=2)
    placed = factories.order_place(product=product)
    with run_on_commit():
        factories.pay(placed.order)
    api, token = Client(), {"X-Order-Token": placed.access_token}
    assert api.get(f"/api/v1/orders/{placed.order.pk}/keys/", headers=token).status_code == 200
    again = api.get(f"/api/v1/orders/{placed.order.pk}/keys/", headers=token)
    assert (again.status_code, again.json()["code"]) == (429, "throttled")
    assert int(again["Retry-After"]) > 0
    assert KeyReveal.objects.filter(order=placed.order).count() == 1


def test_checkout_without_a_gateway_answers_503_and_orders_nothing(settings):
    settings.PAYMENT_GATEWAYS = []
    product = factories.product_create(stock=2)
    response = Client().post(
        "/api/v1/orders/", {"product": product.pk, "quantity": 1, "email": "g@example.com"}, "application/json"
    )
    assert (response.status_code, response.json()["code"]) == (503, "no_gateway")
    assert Order.objects.count() == 0


def test_stock_upload_for_an_unknown_product_answers_json_404_and_imports_nothing():
    merchant = factories.merchant_create()
    _, secret = shop_services.merchant_api_token_create_unchecked(
        merchant=merchant, name="ci", actor=None, now=timezone.now()
    )
    response = Client(HTTP_AUTHORIZATION=f"Token {secret}").post(
        "/api/v1/merchant/products/999999/stock/", data=b"KEY-1\n", content_type="text/plain"
    )
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert StockUpload.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/orders/abc/"),
        ("get", "/api/v1/products/x/"),
        ("get", "/api/v1/orders/abc/keys/"),
        ("post", "/api/v1/orders/1x/confirm/"),
        ("get", "/api/v1/merchant/stock-uploads/first/"),
        ("get", "/api/v1/no-such-thing/"),
        ("get", "/api/v1/"),
        ("post", "/api/v1/merchant/products/%0A/revoke/"),  # found by schemathesis: was Django's HTML 404
    ],
)
def test_unknown_paths_under_the_api_answer_the_json_404(method, path):
    response = getattr(Client(), method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


# --- the schema lists every code ----------------------------------------------------------------------


def _codes_raised(source: str, error_names: set[str]) -> set[str]:
    """The literal codes passed to `error_names(...)` calls in `source` (as `code=` or second argument)."""
    codes = set()
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in error_names:
            args = [kw.value for kw in node.keywords if kw.arg == "code"] or node.args[1:2]
            codes.update(arg.value for arg in args if isinstance(arg, ast.Constant))
    return codes


def _schema_codes(schema: dict, path: str, method: str) -> dict[str, str]:
    responses = schema["paths"][path][method]["responses"]
    return {status: response.get("description", "") for status, response in responses.items()}


def test_every_code_the_views_can_raise_is_in_the_schema():
    from escrow import services as escrow_services

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    error = schema["components"]["schemas"]["ApiError"]
    assert set(error["properties"]) == {"detail", "code"} and set(error["required"]) == {"detail", "code"}

    checkout_codes = _codes_raised(inspect.getsource(escrow_services), {"CheckoutError"})
    upload_codes = _codes_raised(inspect.getsource(shop_services.stock_upload_start), {"ShopError", "StockFileError"})
    upload_codes |= _codes_raised((ROOT / "shop" / "stock_files.py").read_text(), {"StockFileError"})
    assert {"out_of_stock", "no_gateway", "reservation_limit", "bad_email"} <= checkout_codes
    assert {"not_found", "empty_file", "too_large"} <= upload_codes

    expected = {
        ("/api/v1/orders/", "post"): checkout_codes | {"invalid", "throttled"},
        ("/api/v1/orders/{id}/", "get"): {"not_found"},
        ("/api/v1/orders/{id}/keys/", "get"): {"not_found", "not_delivered", "throttled"},
        ("/api/v1/orders/{id}/confirm/", "post"): {"not_found", "bad_state"},
        ("/api/v1/products/{id}/", "get"): {"not_found"},
        ("/api/v1/merchant/products/", "get"): {"not_authenticated", "authentication_failed", "permission_denied"},
        ("/api/v1/merchant/products/{id}/stock/", "post"): upload_codes
        | {"invalid", "not_authenticated", "authentication_failed", "permission_denied"},
        ("/api/v1/merchant/stock-uploads/{id}/", "get"): {"not_found", "permission_denied"},
        ("/api/v1/merchant/withdrawals/", "post"): {
            "below_minimum",
            "insufficient_funds",
            "bad_code",
            "scope",
            "throttled",
            "idempotency_mismatch",
            "idempotency_in_progress",
        },
        ("/api/v1/merchant/orders/{id}/refund/", "post"): {"not_found", "bad_keys", "bad_state", "scope"},
        ("/api/v1/merchant/orders/", "get"): {"invalid_cursor", "scope", "throttled"},
    }
    for (path, method), codes in expected.items():
        descriptions = _schema_codes(schema, path, method)
        listed = " ".join(descriptions.values())
        missing = {code for code in codes if f"`{code}`" not in listed}
        assert not missing, f"{method.upper()} {path} does not list {missing}"
        for status, response in schema["paths"][path][method]["responses"].items():
            if status.startswith(("4", "5")):
                body = response["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/ApiError"}, (path, status)


def test_a_list_path_without_its_slash_still_redirects_to_the_list():
    response = Client().get("/api/v1/products")
    assert response.status_code == 301
    assert response["Location"] == "/api/v1/products/"


@pytest.mark.django_db
def test_an_order_the_caller_does_not_own_answers_the_json_404_with_its_code():
    # Django's Http404 (raised by selectors such as order_for_viewer) gets the same shape as DRF's own.
    response = Client(HTTP_X_ORDER_TOKEN="wrong").get("/api/v1/orders/999999/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_every_merchant_operation_names_its_scopes_and_their_refusal():
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    merchant = {
        (path, method): operation
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/merchant/") and "/disputes/" not in path
        for method, operation in operations.items()
    }
    assert len(merchant) >= 19
    for (path, method), operation in merchant.items():
        assert operation.get("x-token-scopes"), (path, method)
        assert "Token scope:" in operation.get("description", ""), (path, method)
        assert "`scope`" in operation["responses"]["403"]["description"], (path, method)
        assert "429" in operation["responses"], (path, method)
        if method == "post" and "tokens" not in path:
            assert any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", [])), path
