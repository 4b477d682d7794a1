"""The one answer to "which address is this client?", for everything that records or limits by IP.

`X-Forwarded-For` is believed only when the direct peer is one of `TRUSTED_PROXIES` (CIDRs): then
the client is the last address in the header outside them (each proxy appends the peer it saw, so
everything left of the first untrusted hop was written by the client and may be forged).
"""

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from django.conf import settings


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
    return tuple(ip_network(cidr.strip(), strict=False) for cidr in cidrs if cidr.strip())


def _is_trusted(address: str, networks) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)


def _valid(address: str) -> bool:
    try:
        ip_address(address)
    except ValueError:
        return False
    return True


def client_ip(request) -> str:
    """The client's address ("" if the server was not told one). Worked out once per request (the
    checkout asks for its caps, its rate limit and the risk engine), as the headers never change."""
    try:
        return request._shop_client_ip
    except AttributeError:
        ip = request._shop_client_ip = _client_ip(request)
        return ip


def _client_ip(request) -> str:
    peer = request.META.get("REMOTE_ADDR") or ""
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    if not networks or not _is_trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    nearest = peer
    for hop in reversed(hops):
        if not _valid(hop):
            return nearest  # a trusted proxy passed on garbage: the last address we can vouch for
        if not _is_trusted(hop, networks):
            return hop
        nearest = hop
    return nearest  # every hop is one of ours: the request started inside
