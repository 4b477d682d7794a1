"""The HTTP side of webhooks to merchants: the signature, the destination check and the POST itself.

No database here. A destination is checked when the endpoint is registered and again before every
send (a name may resolve elsewhere by then: DNS rebinding), and the POST connects to the very address
that was checked, so a second lookup cannot swap it.
"""

import hashlib
import hmac
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils.translation import gettext_lazy as _
from requests.adapters import HTTPAdapter

SIGNATURE_HEADER = "Shop-Signature"
USER_AGENT = "CardShop-Webhooks/1"
URL_MAX_LENGTH = 500


class DestinationRefused(Exception):
    """The URL may not be posted to; `code` for machines, the message for people."""

    def __init__(self, message: str, *, code: str):
        super().__init__(str(message))
        self.code = code


def signature_header(*, secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the value of `Shop-Signature`."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _address_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address.is_loopback and settings.WEBHOOKS_ALLOW_LOOPBACK:
        return False
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global  # shared address space (100.64/10) and the like
    )


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # as written in the URL (for Host, SNI and the certificate)
    port: int
    address: str  # the checked IP the POST connects to


def url_check(url: str) -> tuple[str, str, int]:
    """The URL's shape alone (no lookup): (scheme, host, port), or `DestinationRefused`."""
    if not isinstance(url, str) or not url.strip() or len(url) > URL_MAX_LENGTH:
        raise DestinationRefused(_("Enter a URL of at most 500 characters."), code="webhook_url_invalid")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise DestinationRefused(_("Enter a valid URL."), code="webhook_url_invalid") from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused(_("Enter a valid http or https URL."), code="webhook_url_invalid")
    if parts.username or parts.password:
        raise DestinationRefused(
            _("Leave the user name and password out of the URL: check our signature instead."),
            code="webhook_url_invalid",
        )
    if settings.PRODUCTION and parts.scheme != "https":
        raise DestinationRefused(_("The endpoint must use https."), code="webhook_url_https")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def destination_resolve(url: str) -> Destination:
    """Check the URL and resolve its host; refuse it if any address it resolves to is private, loopback,
    link-local, multicast, reserved or otherwise not on the public internet."""
    scheme, host, port = url_check(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise DestinationRefused(
            _("The endpoint's host name does not resolve."), code="webhook_url_unresolvable"
        ) from error
    addresses = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(info[4][0].split("%")[0]))
        except ValueError:
            continue
    if not addresses:
        raise DestinationRefused(_("The endpoint's host name does not resolve."), code="webhook_url_unresolvable")
    if any(_address_refused(address) for address in addresses):
        raise DestinationRefused(
            _("The endpoint must be on the public internet, not a private, local or reserved address."),
            code="webhook_url_private",
        )
    return Destination(scheme=scheme, host=host, port=port, address=str(addresses[0]))


class _PinnedAdapter(HTTPAdapter):
    """Connects to the checked address while TLS still checks the certificate against the host name."""

    def __init__(self, destination: Destination):
        self.destination = destination
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self.destination.address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self.destination.host
            pool_kwargs["assert_hostname"] = self.destination.host
        return host_params, pool_kwargs


@dataclass(frozen=True)
class PostResult:
    ok: bool
    status_code: int | None
    error: str


def post(*, url: str, body: bytes, secret: str, timestamp: int, event_type: str, event_id: str) -> PostResult:
    """POST one signed event. Any 2xx is success; a redirect is a failure (never followed). Refused
    destinations and network errors come back as a failed `PostResult`, never raised."""
    try:
        destination = destination_resolve(url)
    except DestinationRefused as refused:
        return PostResult(ok=False, status_code=None, error=f"{refused.code}: {refused}"[:200])
    default_port = 443 if destination.scheme == "https" else 80
    host_header = destination.host if ":" not in destination.host else f"[{destination.host}]"
    if destination.port != default_port:
        host_header = f"{host_header}:{destination.port}"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": host_header,
        SIGNATURE_HEADER: signature_header(secret=secret, body=body, timestamp=timestamp),
        "Shop-Event": event_type,
        "Shop-Event-Id": event_id,
    }
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: it would connect somewhere unchecked
    adapter = _PinnedAdapter(destination)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    try:
        response = session.post(
            url.strip(),
            data=body,
            headers=headers,
            timeout=(settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS, settings.WEBHOOK_READ_TIMEOUT_SECONDS),
            allow_redirects=False,
            stream=True,  # the answer's body is never read: a huge one costs nothing
        )
    except requests.RequestException as error:
        return PostResult(ok=False, status_code=None, error=type(error).__name__)
    finally:
        session.close()
    response.close()
    ok = 200 <= response.status_code < 300
    return PostResult(ok=ok, status_code=response.status_code, error="" if ok else f"HTTP {response.status_code}")
