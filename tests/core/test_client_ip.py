"""One client-IP helper: X-Forwarded-For is believed only from TRUSTED_PROXIES."""

import pytest
from django.test import RequestFactory

from core.client_ip import client_ip


def request_from(peer: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


def test_without_trusted_proxies_the_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = []
    assert client_ip(request_from("203.0.113.9", "1.2.3.4")) == "203.0.113.9"


def test_a_header_from_an_untrusted_peer_is_ignored(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_ip(request_from("203.0.113.9", "10.1.1.1, 1.2.3.4")) == "203.0.113.9"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("198.51.100.7", "198.51.100.7"),
        # The client wrote the left part itself: only the last hop outside our proxies counts.
        ("6.6.6.6, 198.51.100.7", "198.51.100.7"),
        ("6.6.6.6, 198.51.100.7, 10.0.0.3", "198.51.100.7"),
        ("2001:db8::5, 10.0.0.3", "2001:db8::5"),
        ("not-an-ip, 10.0.0.3", "10.0.0.3"),
        ("10.0.0.4, 10.0.0.3", "10.0.0.4"),
        ("", "10.0.0.2"),
    ],
)
def test_behind_a_trusted_proxy_the_last_outside_address_is_the_client(settings, forwarded, expected):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]
    assert client_ip(request_from("10.0.0.2", forwarded)) == expected
