"""The device cookie and the network helper that accounts and risk record by."""

import pytest
from django.test import Client

from core.device import DEVICE_COOKIE, network_of


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("255.255.255.255", "255.255.255.0/24"),
        ("::ffff:192.0.2.1", "::/48"),
        ("fe80::1%eth0", "fe80::/48"),
        ("", ""),
        ("not-an-ip", ""),
    ],
)
def test_network_is_the_slash_24_or_48(address, network):
    assert network_of(address) == network


@pytest.mark.django_db
def test_a_browser_gets_one_signed_device_cookie_and_keeps_it():
    client = Client()
    first = client.get("/")
    cookie = first.cookies[DEVICE_COOKIE]
    assert cookie["httponly"] and cookie["max-age"] > 365 * 24 * 3600
    again = client.get("/")
    assert DEVICE_COOKIE not in again.cookies  # known device: nothing re-minted


@pytest.mark.django_db
def test_a_forged_device_cookie_is_replaced_and_api_calls_get_none():
    client = Client()
    client.cookies[DEVICE_COOKIE] = "chosen-by-attacker"
    response = client.get("/")
    assert response.cookies[DEVICE_COOKIE].value != "chosen-by-attacker"
    assert DEVICE_COOKIE not in Client().get("/api/v1/products/").cookies


@pytest.mark.django_db
def test_a_payment_providers_webhook_gets_no_device_cookie():
    """A program that POSTs without cookies (the provider's notify) is not a browser to remember."""
    from tests import factories

    order = factories.order_place(product=factories.product_create(stock=1)).order
    body, headers = factories.signed_webhook(payment=order.payments.get())
    response = factories.webhook_post(Client(), body, headers)
    assert response.status_code == 200
    assert DEVICE_COOKIE not in response.cookies
