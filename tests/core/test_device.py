"""The device cookie and the network helper that accounts and risk record by."""

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from core.device import DEVICE_COOKIE, network_by_parsing, network_of


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
        ("010.1.2.3", ""),  # leading zeros: not an address to `ip_address` either
        ("1.2.3.256", ""),
        ("1.2.3", ""),
        (" 1.2.3.4", ""),
        ("\u0661.2.3.4", ""),  # Arabic-Indic digit one: a digit to str.isdigit, not to an address
    ],
)
def test_network_is_the_slash_24_or_48(address, network):
    assert network_of(address) == network


_OCTETS = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "-1", "+1", "", " 1", "1 ", "0x1"]))


@given(st.one_of(st.lists(_OCTETS, min_size=3, max_size=5).map(".".join), st.ip_addresses().map(str), st.text()))
def test_network_by_the_addresses_text_is_the_network_that_parsing_it_gives(address):
    assert network_of(address) == network_by_parsing(address)


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
