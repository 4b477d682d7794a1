from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class WebhookRejected(Exception):
    """A webhook that is not provably from the gateway, or not well-formed. Answer 400, change nothing."""


@dataclass(frozen=True)
class GatewayEvent:
    event_id: str
    type: str
    payment_id: str
    amount: int  # minor units
    currency: str
    body: dict


class Gateway(Protocol):
    name: str

    def payment_id_new(self) -> str:
        """A fresh id for a payment the shop is about to ask for."""

    def pay_url(self, *, payment_id: str, return_url: str) -> str:
        """Where the buyer goes to pay; the gateway sends them back to `return_url`."""

    def webhook_parse(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> GatewayEvent:
        """Verify the signature first, then parse; raise `WebhookRejected` for anything doubtful."""
