"""Which device and which network a request comes from, for everything that records or limits by them.

The device is a random id in a signed, long-lived cookie that the shop sets on the first response to a
browser without one (`DeviceCookieMiddleware`). It is not a fingerprint: clearing cookies makes a new
device, which the risk engine counts as such. API clients that send no cookie have no device (None).

The network is the client address's /24 (IPv4) or /48 (IPv6): the unit that an ISP hands to one
household or one small office, so a "new network" means a new place, not a new DHCP lease.
"""

import secrets
from ipaddress import IPv4Address, IPv6Address, ip_address

from django.conf import settings

DEVICE_COOKIE = "shop_device"
DEVICE_COOKIE_SALT = "core.device"
DEVICE_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600  # two years: a device is "known" for as long as a browser keeps it


_OCTET = {str(number): True for number in range(256)}  # each octet as IPv4's canonical text writes it


def device_id(request) -> str | None:
    """The request's device id: the signed cookie's value, or the one minted for this response."""
    minted = getattr(request, "_shop_device_minted", None)
    if minted:
        return minted
    try:
        return request._shop_device  # the signature checked once per request, by the middleware
    except AttributeError:
        return request.get_signed_cookie(DEVICE_COOKIE, default=None, salt=DEVICE_COOKIE_SALT)


def network_of(address: str) -> str:
    """The /24 or /48 holding `address` ("" for no or a malformed address)."""
    parts = address.split(".")
    if len(parts) == 4 and all(_OCTET.get(part, False) for part in parts):
        # An IPv4 address as `ip_address` accepts and writes it (decimal, no leading zeros), by its text:
        # parsing it costs a few times more, and every checkout asks.
        return f"{parts[0]}.{parts[1]}.{parts[2]}.0/24"
    return network_by_parsing(address)


def network_by_parsing(address: str) -> str:
    """`network_of` by parsing the address: any IPv6 address, and what is not a plain IPv4 address."""
    try:
        parsed = ip_address(address)
    except ValueError:
        return ""
    # The network's first address by masking, as ip_network(…, strict=False) gives it in a few times the time.
    if isinstance(parsed, IPv4Address):
        return f"{IPv4Address(int(parsed) & 0xFFFFFF00)}/24"
    return f"{IPv6Address(int(parsed) >> 80 << 80)}/48"


class DeviceCookieMiddleware:
    """Gives every browser a device id, on the page it opens first (a GET); API calls and the other
    POSTs with no cookie (a payment provider's webhook) get none minted, so no cookie is signed for
    programs that never send it back."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request._shop_device = request.get_signed_cookie(DEVICE_COOKIE, default=None, salt=DEVICE_COOKIE_SALT)
        has_cookie = request._shop_device is not None
        wants_cookie = not has_cookie and request.method in ("GET", "HEAD") and not request.path.startswith("/api/")
        if wants_cookie:
            request._shop_device_minted = secrets.token_urlsafe(18)
        response = self.get_response(request)
        if wants_cookie:
            response.set_signed_cookie(
                DEVICE_COOKIE,
                request._shop_device_minted,
                salt=DEVICE_COOKIE_SALT,
                max_age=DEVICE_COOKIE_MAX_AGE,
                secure=settings.SESSION_COOKIE_SECURE,
                httponly=True,
                samesite="Lax",
            )
        return response
