from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from escrow.models import Payment

# Far above any order (a price has at most 12 digits, a quantity is at most 1000) and far below the
# bigint columns (9.2e18), so that no sum of booked amounts can overflow them.
AMOUNT_MAX = 10**15
# Gateways send flat events; anything much deeper is not one, and could exhaust a parser's stack.
BODY_DEPTH_MAX = 16


class WebhookRejected(Exception):
    """A webhook that is not provably from the gateway, or not well-formed. Answer 400, change nothing."""


class GatewayConnectionError(ConnectionError):
    """The provider could not be reached or answered nothing usable: worth retrying (with the same key)."""


class RefundDeclined(Exception):
    """The provider refused a refund: retrying will not help; staff pay it another way (payments page)."""


class WebhookIgnored(Exception):
    """A verified event of a kind the shop does not act on (a provider sends many): answer 200, store nothing."""


@dataclass(frozen=True)
class GatewayEvent:
    event_id: str
    type: str
    payment_id: str
    amount: int  # minor units
    currency: str
    body: dict
    refund_id: str = ""  # set on refund events
    # The shop's own reference for the refund (the `idempotency_key` it asked with), echoed back as
    # providers do (WeChat Pay's out_refund_no, Alipay's out_request_no): the shop asks with no
    # transaction open, so the event can arrive before the shop has stored `refund_id`.
    refund_reference: str = ""
    # The provider's own id of the payment (epay's and Alipay's trade_no, Stripe's PaymentIntent): stored
    # on the payment when it succeeds; later events that only know it (a Stripe refund or chargeback)
    # find the payment by it when `payment_id` is empty.
    provider_reference: str = ""
    # A chargeback's (or a refund made at the provider's own dashboard's) id at the provider.
    chargeback_id: str = ""


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
    # The currencies it takes (None: any the shop knows); checkout refuses an order in another one.
    currencies: frozenset[str] | None
    # True when the provider has no refund API: refunds wait for staff to pay them by hand (escrow/refunds.py).
    refunds_by_hand: bool
    # True when the provider's answer to a refund request is itself the confirmation (no later event).
    refund_settles_on_answer: bool

    def is_configured(self) -> bool:
        """Its settings are present (keys, ids): only a configured gateway takes payments."""

    def payment_id_new(self) -> str:
        """A fresh id for a payment the shop is about to ask for."""

    def pay_url(self, *, payment: "Payment", return_url: str) -> str:
        """Where the buyer goes to pay `payment` (its id, amount and currency); the gateway sends them
        back to `return_url` (a path of this shop). Computed locally: no call leaves the machine."""

    def webhook_parse(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> GatewayEvent:
        """Verify the signature first, then parse; raise `WebhookRejected` for anything doubtful."""

    def refund_request(self, *, payment_id: str, amount: int, currency: str, idempotency_key: str) -> str:
        """Ask the gateway to pay `amount` back on a payment; returns the gateway's refund id.

        The same `idempotency_key` always answers the same refund id and pays at most once. The gateway
        confirms later with its own signed `refund.succeeded` webhook.
        """

    def records(self, *, since: datetime, until: datetime) -> list[GatewayRecord]:
        """The gateway's own record of succeeded payments and refunds in `[since, until)`."""


# --- checks every gateway's `webhook_parse` applies to what it read (each raises ValueError) ----------


def amount_check(amount: int) -> int:
    if not 0 < amount <= AMOUNT_MAX:
        raise ValueError(f"Amount {amount} is out of range.")
    return amount


def _id_check(value: str, *, max_length: int) -> str:
    if not value or len(value) > max_length or not value.isprintable():
        raise ValueError("Not an id.")
    return value


def event_id_check(value: str) -> str:
    """A gateway event id the shop can store (and so deduplicate) as it is."""
    from escrow.models import WebhookEvent

    return _id_check(value, max_length=WebhookEvent._meta.get_field("event_id").max_length)


def reference_check(value: str) -> str:
    """A gateway's payment or refund id, no longer than the columns that hold them."""
    from escrow.models import Payment, Refund

    limit = min(
        Payment._meta.get_field("payment_id").max_length, Refund._meta.get_field("gateway_refund_id").max_length
    )
    return _id_check(value, max_length=limit)


def body_check(data: Any) -> None:
    """A parsed body is stored as evidence: bounded in depth and free of NUL, which PostgreSQL refuses."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > BODY_DEPTH_MAX:
            raise ValueError("Body is nested too deeply.")
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and "\x00" in value:
            raise ValueError("Body holds a NUL character.")


def shop_url(path: str) -> str:
    """An absolute URL of this shop, as a provider needs for its callbacks and return pages."""
    from django.conf import settings

    return settings.SHOP_BASE_URL.rstrip("/") + path


def flat_params(data: Mapping[str, Any]) -> dict[str, str]:
    """A form or query body as the providers send it: every value one string (the last one given)."""
    return {key: (value[-1] if isinstance(value, list) else value) for key, value in data.items()}


def own_records(*, gateway: str, since: datetime, until: datetime) -> list[GatewayRecord]:
    """The shop's own rows a gateway settled, as `records` answers for a provider whose books the shop
    cannot download (the sandbox, epay): succeeded payments and refunds in `[since, until)`."""
    from escrow.models import Payment, PaymentStatus, Refund, RefundStatus

    rows = [
        GatewayRecord(
            kind="payment",
            reference=p.payment_id,
            amount=p.received_amount,
            currency=p.received_currency,
            at=p.settled_at,
        )
        for p in Payment.objects.filter(
            gateway=gateway,
            status__in=[PaymentStatus.SUCCEEDED, PaymentStatus.MISMATCHED],
            settled_at__gte=since,
            settled_at__lt=until,
        )
    ]
    rows += [
        GatewayRecord(
            kind="refund", reference=r.gateway_refund_id, amount=r.amount, currency=r.currency, at=r.succeeded_at
        )
        for r in Refund.objects.filter(
            gateway=gateway, status=RefundStatus.SUCCEEDED, succeeded_at__gte=since, succeeded_at__lt=until
        )
    ]
    return rows
