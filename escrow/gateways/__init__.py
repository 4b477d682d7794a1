"""Payment gateways, one package each, behind the small interface in `base.py`.

`PAYMENT_GATEWAYS` (settings) lists the gateways in the order checkout offers them; a gateway takes
payments only when it is listed *and* configured (its settings are present). The sandbox is never
enabled in production, whatever the settings say: it delivers keys for payments nobody made.
"""

from django.conf import settings

from escrow.gateways.alipay.gateway import AlipayGateway
from escrow.gateways.base import Gateway, GatewayEvent, GatewayRecord, WebhookIgnored, WebhookRejected
from escrow.gateways.epay.gateway import EpayGateway
from escrow.gateways.sandbox.gateway import SandboxGateway
from escrow.gateways.stripe.gateway import StripeGateway

# Every gateway the code has; which of them run is decided per call by `gateways_enabled`.
GATEWAYS: dict[str, Gateway] = {
    "sandbox": SandboxGateway(),
    "epay": EpayGateway(),
    "alipay": AlipayGateway(),
    "stripe": StripeGateway(),
}
SANDBOX = "sandbox"


class GatewayUnavailable(LookupError):
    """A gateway that is not enabled here (or does not exist): nothing may be paid or refunded through it."""


def gateway_configured(name: str) -> bool:
    """Its settings are present (a gateway without `is_configured` needs none)."""
    gateway = GATEWAYS.get(name)
    if gateway is None or (name == SANDBOX and settings.PRODUCTION):
        return False
    is_configured = getattr(gateway, "is_configured", None)
    return True if is_configured is None else bool(is_configured())


def gateways_enabled() -> list[str]:
    """The enabled gateways' names, in the order of `PAYMENT_GATEWAYS`: listed, known and configured;
    never the sandbox in production."""
    return [name for name in settings.PAYMENT_GATEWAYS if gateway_configured(name)]


def gateway_enabled(name: str) -> bool:
    return name in gateways_enabled()


def gateway_get(name: str) -> Gateway:
    if not gateway_enabled(name):
        raise GatewayUnavailable(name)
    return GATEWAYS[name]


def gateways_for_currency(currency: str) -> list[str]:
    """The enabled gateways that take `currency`, in checkout order (the first is the default)."""
    return [name for name in gateways_enabled() if _takes(GATEWAYS[name], currency)]


def _takes(gateway: Gateway, currency: str) -> bool:
    currencies = getattr(gateway, "currencies", None)
    return currencies is None or currency in currencies


def gateway_for_checkout(name: str | None = None, *, currency: str | None = None) -> Gateway | None:
    """The gateway a new order is paid through: `name` if it is enabled (and takes `currency`), else
    None; without a name, the first enabled one that takes `currency` (None when there is none)."""
    if name is not None:
        if not gateway_enabled(name):
            return None
        gateway = GATEWAYS[name]
        return gateway if currency is None or _takes(gateway, currency) else None
    enabled = gateways_enabled() if currency is None else gateways_for_currency(currency)
    return GATEWAYS[enabled[0]] if enabled else None


def gateways_status() -> list[dict]:
    """Every gateway with whether it is configured and enabled here (the staff payments page)."""
    return [
        {
            "name": name,
            "configured": gateway_configured(name),
            "listed": name in settings.PAYMENT_GATEWAYS,
            "enabled": gateway_enabled(name),
            "refunds_by_hand": bool(getattr(gateway, "refunds_by_hand", False)),
        }
        for name, gateway in GATEWAYS.items()
    ]


__all__ = [
    "GATEWAYS",
    "SANDBOX",
    "Gateway",
    "GatewayEvent",
    "GatewayRecord",
    "GatewayUnavailable",
    "WebhookIgnored",
    "WebhookRejected",
    "gateway_configured",
    "gateway_enabled",
    "gateway_for_checkout",
    "gateway_get",
    "gateways_enabled",
    "gateways_for_currency",
    "gateways_status",
]
