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
    refund_id: str = ""  # set on refund events


@dataclass(frozen=True)
class GatewayRecord:
    """One settled movement in the gateway's own books (for reconciliation)."""

    kind: str  # "payment" or "refund"
    reference: str  # the gateway's payment id or refund id
    amount: int  # minor units
    currency: str
    at: datetime


class Gateway(Protocol):
    name: str

    def payment_id_new(self) -> str:
        """A fresh id for a payment the shop is about to ask for."""

    def pay_url(self, *, payment_id: str, return_url: str) -> str:
        """Where the buyer goes to pay; the gateway sends them back to `return_url`."""

    def webhook_parse(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> GatewayEvent:
        """Verify the signature first, then parse; raise `WebhookRejected` for anything doubtful."""

    def refund_request(self, *, payment_id: str, amount: int, currency: str, idempotency_key: str) -> str:
        """Ask the gateway to pay `amount` back on a payment; returns the gateway's refund id.

        The same `idempotency_key` always answers the same refund id and pays at most once. The gateway
        confirms later with its own signed `refund.succeeded` webhook.
        """

    def records(self, *, since: datetime, until: datetime) -> list[GatewayRecord]:
        """The gateway's own record of succeeded payments and refunds in `[since, until)`."""
