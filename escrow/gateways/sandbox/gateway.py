"""The offline sandbox gateway: a pay page where a person pays or fails, and a signed webhook.

Signature header: `Sandbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` under
`SANDBOX_WEBHOOK_SECRET`, accepted within `SANDBOX_WEBHOOK_TOLERANCE_SECONDS` of now.
"""

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from core.money import Currency, MoneyError, from_major
from escrow.gateways.base import (
    GatewayEvent,
    GatewayRecord,
    WebhookRejected,
    amount_check,
    body_check,
    event_id_check,
    own_records,
    reference_check,
)

SIGNATURE_HEADER = "Sandbox-Signature"
EVENT_TYPES = {"payment.succeeded", "payment.failed", "refund.succeeded"}


def signature_header(*, body: bytes, timestamp: int, secret: str | None = None) -> str:
    secret = secret or settings.SANDBOX_WEBHOOK_SECRET
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _verify(*, body: bytes, header: str | None, now: datetime) -> None:
    if not settings.SANDBOX_WEBHOOK_SECRET:  # an HMAC under an empty key proves nothing
        raise WebhookRejected("The sandbox gateway is not configured.")
    if not header:
        raise WebhookRejected(f"Missing {SIGNATURE_HEADER} header.")
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise WebhookRejected(f"Malformed {SIGNATURE_HEADER} header.") from None
    if abs(now.timestamp() - timestamp) > settings.SANDBOX_WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookRejected("Signature timestamp is outside the tolerance window.")
    expected = signature_header(body=body, timestamp=timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise WebhookRejected("Signature does not match.")


class SandboxGateway:
    name = "sandbox"
    currencies = None
    refunds_by_hand = False
    refund_settles_on_answer = False

    def is_configured(self) -> bool:
        # Needs nothing but its secret, which the settings demand whenever it is listed (and whose
        # absence makes its webhook refuse every signature): listed is configured.
        return True

    def payment_id_new(self) -> str:
        return "sbx_" + secrets.token_hex(12)

    def pay_url(self, *, payment, return_url: str) -> str:
        path = reverse("sandbox:pay", kwargs={"payment_id": payment.payment_id})
        return f"{path}?{urlencode({'return': return_url})}"

    def webhook_parse(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> GatewayEvent:
        _verify(body=body, header=headers.get(SIGNATURE_HEADER), now=now)
        try:
            data = json.loads(body)
            event_id, event_type = data["event_id"], data["type"]
            payment_id, currency = data["payment_id"], data["currency"]
            refund_id = data.get("refund_id") or ""
            refund_reference = data.get("refund_reference") or ""
            values = (event_id, event_type, payment_id, currency, refund_id, refund_reference)
            if not all(isinstance(value, str) for value in values):
                raise ValueError
            if event_type not in EVENT_TYPES or currency not in Currency.values:
                raise ValueError
            if event_type == "refund.succeeded" and not refund_id:
                raise ValueError
            event_id_check(event_id)
            reference_check(payment_id)
            if refund_id:
                reference_check(refund_id)
            if refund_reference:
                reference_check(refund_reference)
            amount = amount_check(from_major(str(data["amount"]), currency))
            body_check(data)
        except (ValueError, KeyError, TypeError, RecursionError, MoneyError):
            # RecursionError: json.loads of a deeply nested body runs out of stack before any check.
            raise WebhookRejected("Malformed event body.") from None
        return GatewayEvent(
            event_id=event_id,
            type=event_type,
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            body=data,
            refund_id=refund_id,
            refund_reference=refund_reference,
        )

    def refund_request(self, *, payment_id: str, amount: int, currency: str, idempotency_key: str) -> str:
        """The sandbox pays every refund: it answers an id derived from the key (so a retry is the same
        refund) and sends its signed `refund.succeeded` webhook, echoing the key, once the shop's
        transaction commits, or at once when the shop asks with none open (as it does)."""
        refund_id = (
            "sbr_"
            + hmac.new(settings.SANDBOX_WEBHOOK_SECRET.encode(), idempotency_key.encode(), hashlib.sha256).hexdigest()[
                :24
            ]
        )
        from escrow.gateways.sandbox.tasks import sandbox_refund_webhook_send_task

        transaction.on_commit(
            lambda: sandbox_refund_webhook_send_task.delay(
                payment_id=payment_id,
                refund_id=refund_id,
                amount=amount,
                currency=currency,
                refund_reference=idempotency_key,
            )
        )
        return refund_id

    def records(self, *, since: datetime, until: datetime) -> list[GatewayRecord]:
        """The sandbox's books are the shop's own rows it settled: succeeded payments and refunds."""
        return own_records(gateway=self.name, since=since, until=until)


def event_body(
    *,
    event_type: str,
    payment_id: str,
    amount: str,
    currency: str,
    event_id: str | None = None,
    refund_id: str | None = None,
    refund_reference: str | None = None,
) -> bytes:
    """The JSON body the sandbox sends, exactly as a provider would (used by the pay page and tests)."""
    data = {
        "event_id": event_id or "evt_" + secrets.token_hex(12),
        "type": event_type,
        "payment_id": payment_id,
        "amount": amount,
        "currency": currency,
    }
    if refund_id:
        data["refund_id"] = refund_id
    if refund_reference:
        data["refund_reference"] = refund_reference
    return json.dumps(data).encode()
