"""Which gateway an order is paid through: POST /api/v1/orders/ `gateway`, the checkout form's choice,
configured / not configured, and the checks."""

import pytest
from django.core import checks
from django.test import Client

from escrow import gateways
from escrow.models import Order, Payment
from shop.models import CardKey, CardKeyStatus
from tests import factories

pytestmark = pytest.mark.django_db


def create(product, **extra):
    return Client().post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": 1, "email": "g@example.com", **extra},
        "application/json",
    )


@pytest.mark.usefixtures("real_gateways")
@pytest.mark.parametrize(
    ("gateway", "pay_url_start"),
    [
        ("sandbox", "http://testserver/payments/sandbox/pay/"),
        ("epay", "https://pay.example.net/submit.php?"),
        ("alipay", "https://openapi.alipay.example/gateway.do?"),
        ("stripe", "http://testserver/payments/stripe/pay/"),
    ],
)
def test_the_gateway_asked_for_is_used_and_its_pay_url_answered(gateway, pay_url_start):
    response = create(factories.product_create(stock=2), gateway=gateway)
    assert response.status_code == 201, response.content
    payment = response.json()["payment"]
    assert payment["gateway"] == gateway
    assert payment["pay_url"].startswith(pay_url_start)
    assert Payment.objects.get().gateway == gateway


@pytest.mark.usefixtures("real_gateways")
def test_without_a_gateway_the_first_enabled_one_is_used(settings):
    settings.PAYMENT_GATEWAYS = ["alipay", "sandbox"]
    assert create(factories.product_create(stock=2)).json()["payment"]["gateway"] == "alipay"


@pytest.mark.usefixtures("real_gateways")
def test_epay_method_chooses_the_wallet():
    response = create(factories.product_create(stock=2), gateway="epay", pay_method="wxpay")
    assert "type=wxpay" in response.json()["payment"]["pay_url"]


@pytest.mark.usefixtures("real_gateways")
def test_the_default_skips_gateways_that_do_not_take_the_currency(settings):
    settings.PAYMENT_GATEWAYS = ["epay", "stripe"]  # epay takes only CNY
    usd = factories.product_create(stock=2, currency="USD")
    assert create(usd).json()["payment"]["gateway"] == "stripe"
    response = create(usd, gateway="epay")
    assert (response.status_code, response.json()["code"]) == (400, "gateway_currency")


@pytest.mark.parametrize(
    ("gateway", "code"), [("paypa1", "unknown_gateway"), ("stripe", "gateway_unavailable"), ("", "invalid")]
)
def test_unknown_or_unconfigured_gateway_is_refused_and_orders_nothing(gateway, code):
    # Stripe exists, but its settings are not set in this test run.
    product = factories.product_create(stock=2)
    response = create(product, gateway=gateway)
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert Order.objects.count() == 0
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 2


def test_a_gateway_is_configured_only_when_all_its_settings_are_set(settings):
    settings.PAYMENT_GATEWAYS = ["sandbox", "stripe"]
    settings.STRIPE_SECRET_KEY = "sk_test_x"
    settings.STRIPE_WEBHOOK_SECRET = ""
    assert gateways.gateways_enabled() == ["sandbox"]
    assert [e.id for e in checks.run_checks() if e.id.startswith("escrow.")] == ["escrow.W003"]
    settings.STRIPE_WEBHOOK_SECRET = "whsec_x"
    assert gateways.gateways_enabled() == ["sandbox", "stripe"]
    status = {row["name"]: row for row in gateways.gateways_status()}
    assert status["stripe"]["configured"] and not status["epay"]["configured"]


def test_production_never_enables_the_sandbox_even_configured(settings):
    settings.PRODUCTION = True
    settings.PAYMENT_GATEWAYS = ["sandbox"]
    assert gateways.gateways_enabled() == []
    assert not gateways.gateway_configured("sandbox")


@pytest.mark.usefixtures("real_gateways")
def test_checkout_form_offers_the_configured_gateways_as_radio_buttons(settings):
    product = factories.product_create(stock=2)
    page = Client().get(f"/products/{product.pk}/").text
    for name in ("sandbox", "epay", "alipay", "stripe"):
        assert f'type="radio" name="gateway" value="{name}"' in page
    settings.PAYMENT_GATEWAYS = ["sandbox"]
    page = Client().get(f"/products/{product.pk}/").text
    assert 'type="radio"' not in page
    # One gateway is no choice: no empty "Pay with" box, and its name is sent once, hidden.
    assert "Pay with" not in page
    assert page.count('name="gateway"') == 1 and 'type="hidden" name="gateway" value="sandbox"' in page


@pytest.mark.usefixtures("real_gateways")
def test_checkout_form_pays_through_the_chosen_gateway():
    product = factories.product_create(stock=2)
    response = Client().post(
        f"/products/{product.pk}/checkout/", {"email": "g@example.com", "quantity": 1, "gateway": "epay"}
    )
    assert response.status_code == 302
    assert response["Location"].startswith("https://pay.example.net/submit.php?")
    assert Payment.objects.get().gateway == "epay"


@pytest.mark.usefixtures("real_gateways")
def test_a_pay_method_for_a_gateway_without_methods_is_left_out():
    response = create(factories.product_create(stock=2), gateway="sandbox", pay_method="wxpay")
    assert response.status_code == 201
    assert response.json()["payment"]["pay_url"].startswith("http://testserver/payments/sandbox/pay/")
