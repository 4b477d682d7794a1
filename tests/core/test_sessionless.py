"""The short middleware chain (core/sessionless.py): taken only without a session cookie, by marked
views only, and answering exactly what the full chain answered before it."""

import json

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import Client
from django.urls import path

from core.sessionless import session_not_required
from escrow.models import Order
from tests import factories

pytestmark = pytest.mark.django_db

SHORT_CHAIN = "core.sessionless.SessionlessChainMiddleware"


@session_not_required
def _broken(request):
    raise RuntimeError("the view failed")


urlpatterns = [path("broken/", _broken)]  # for the 500 test, with @pytest.mark.urls(__name__)


def took_short_chain(response) -> bool:
    """The short chain never runs SessionMiddleware: its request has no session at all."""
    return not hasattr(response.wsgi_request, "session")


def checkout(client: Client, product, email: str = "guest@example.com", **extra):
    return client.post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": 1, "email": email},
        content_type="application/json",
        **extra,
    )


def test_a_guest_buys_through_the_short_chain(run_on_commit):
    product = factories.product_create(stock=2)
    client = Client()
    created = checkout(client, product)
    assert created.status_code == 201, created.content
    assert took_short_chain(created)
    assert type(created.wsgi_request.user) is AnonymousUser
    order = Order.objects.get(pk=created.json()["id"])
    assert order.buyer_id is None
    token = {"X-Order-Token": created.json()["access_token"]}

    poll = client.get(f"/api/v1/orders/{order.pk}/keys/", headers=token)
    assert (poll.status_code, took_short_chain(poll)) == (409, True)
    with run_on_commit():
        paid = factories.pay(order, client)
    assert (paid.status_code, took_short_chain(paid)) == (200, True)
    keys = client.get(f"/api/v1/orders/{order.pk}/keys/", headers=token)
    assert (keys.status_code, len(keys.json()["keys"]), took_short_chain(keys)) == (200, 1, True)
    assert not client.cookies  # nothing handed out: no session, no CSRF or device cookie


def test_a_signed_in_buyer_takes_the_full_chain_and_gets_the_order():
    product = factories.product_create(stock=1)
    buyer = factories.user_create(username="signed-in-buyer")
    client = Client()
    client.force_login(buyer)
    created = checkout(client, product, email=buyer.email or "buyer@example.com")
    assert created.status_code == 201, created.content
    assert not took_short_chain(created)
    assert created.wsgi_request.user == buyer
    assert Order.objects.get(pk=created.json()["id"]).buyer == buyer


def test_unmarked_views_take_the_full_chain_without_a_session_cookie_too():
    for url in ["/", "/api/v1/merchant/orders/", "/api/v1/no-such-thing/", "/no-such-page/"]:
        response = Client().get(url)
        assert not took_short_chain(response), url


def _two_clients(settings) -> tuple[Client, Client]:
    """A client through the shop's MIDDLEWARE and one through MIDDLEWARE without the short chain (as
    before it): each builds its middleware on its first request."""
    short = Client()
    short.get("/healthz")
    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if name != SHORT_CHAIN]
    full = Client()
    full.get("/healthz")
    return short, full


def _same_answer(short, full, *, same_length: bool = True) -> None:
    assert took_short_chain(short) and not took_short_chain(full)
    assert short.status_code == full.status_code
    skip = set() if same_length else {"Content-Length"}
    assert {k: v for k, v in short.items() if k not in skip} == {k: v for k, v in full.items() if k not in skip}
    assert "Content-Length" in short and "Vary" in short
    assert short.cookies.keys() == full.cookies.keys()


def test_the_short_chain_answers_with_the_headers_of_the_full_chain(settings):
    product = factories.product_create(stock=4)
    first, second = (factories.order_place(product=product, email=f"b{n}@example.com") for n in (1, 2))
    short, full = _two_clients(settings)
    token = {"X-Order-Token": first.access_token}
    for request in [
        lambda client: client.get(f"/api/v1/orders/{first.order.pk}/keys/", headers=token),  # 409
        lambda client: client.get(f"/api/v1/orders/{first.order.pk}/", headers={"X-Order-Token": "wrong"}),  # 404
        lambda client: client.get(f"/api/v1/products/{product.pk}/", headers={"Accept-Language": "zh-hans"}),
        lambda client: client.post("/payments/epay/notify/"),  # epay not configured: Django's 404 page
    ]:
        short_answer, full_answer = request(short), request(full)
        _same_answer(short_answer, full_answer)
        assert short_answer.content == full_answer.content
    assert short_answer.status_code == 404
    assert short.get(f"/api/v1/products/{product.pk}/", headers={"Accept-Language": "zh-hans"})["Content-Language"] == (
        "zh-hans"
    )
    _same_answer(
        checkout(short, product, email="short@example.com"),
        checkout(full, product, email="full@example.com"),
        same_length=False,  # the order's id
    )
    _same_answer(
        factories.webhook_post(short, *factories.signed_webhook(payment=first.payment)),
        factories.webhook_post(full, *factories.signed_webhook(payment=second.payment)),
    )


@pytest.mark.urls(__name__)
def test_a_failing_view_answers_django_s_500_on_the_short_chain_as_on_the_full_one(settings, caplog):
    short, full = _two_clients(settings)
    short.raise_request_exception = full.raise_request_exception = False
    caplog.clear()
    short, full = short.get("/broken/"), full.get("/broken/")
    _same_answer(short, full)
    assert short.status_code == 500 and short.content == full.content
    logged = [record for record in caplog.records if record.name == "django.request"]
    assert [record.status_code for record in logged] == [500, 500]  # logged once per request


def test_a_session_cookie_however_empty_takes_the_full_chain():
    client = Client()
    client.cookies["sessionid"] = "not-a-session"
    product = factories.product_create(stock=1)
    response = checkout(client, product)
    assert response.status_code == 201
    assert not took_short_chain(response)
    assert json.loads(response.content)["status"] == "awaiting_payment"
