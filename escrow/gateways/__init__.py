"""Payment gateways, one package each, behind the small interface in `base.py`.

`PAYMENT_GATEWAYS` (settings) says which of them take payments; checkout uses the first. The sandbox
is never enabled in production, whatever the settings say: it delivers keys for payments nobody made.
"""

from django.conf import settings

from escrow.gateways.base import Gateway, GatewayEvent, GatewayRecord, WebhookRejected
from escrow.gateways.sandbox.gateway import SandboxGateway

# Every gateway the code has; which of them run is decided per call by `gateways_enabled`.
GATEWAYS: dict[str, Gateway] = {"sandbox": SandboxGateway()}
SANDBOX = "sandbox"


class GatewayUnavailable(LookupError):
    """A gateway that is not enabled here (or does not exist): nothing may be paid or refunded through it."""


def gateways_enabled() -> list[str]:
    """The enabled gateways' names, in the order of `PAYMENT_GATEWAYS`; never the sandbox in production."""
    return [
        name for name in settings.PAYMENT_GATEWAYS if name in GATEWAYS and not (name == SANDBOX and settings.PRODUCTION)
    ]


def gateway_enabled(name: str) -> bool:
    return name in gateways_enabled()


def gateway_get(name: str) -> Gateway:
    if not gateway_enabled(name):
        raise GatewayUnavailable(name)
    return GATEWAYS[name]


def gateway_for_checkout() -> Gateway | None:
    """The gateway new orders are paid through, or None when none is enabled (checkout then refuses)."""
    enabled = gateways_enabled()
    return GATEWAYS[enabled[0]] if enabled else None


__all__ = [
    "GATEWAYS",
    "SANDBOX",
    "Gateway",
    "GatewayEvent",
    "GatewayRecord",
    "GatewayUnavailable",
    "WebhookRejected",
    "gateway_enabled",
    "gateway_for_checkout",
    "gateway_get",
    "gateways_enabled",
]
