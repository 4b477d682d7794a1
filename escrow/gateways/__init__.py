"""Payment gateways, one package each, behind the small interface in `base.py`."""

from escrow.gateways.base import Gateway, GatewayEvent, GatewayRecord, WebhookRejected
from escrow.gateways.sandbox.gateway import SandboxGateway

_GATEWAYS: dict[str, Gateway] = {"sandbox": SandboxGateway()}
DEFAULT_GATEWAY = "sandbox"


def gateway_get(name: str) -> Gateway:
    return _GATEWAYS[name]


__all__ = ["DEFAULT_GATEWAY", "Gateway", "GatewayEvent", "GatewayRecord", "WebhookRejected", "gateway_get"]
