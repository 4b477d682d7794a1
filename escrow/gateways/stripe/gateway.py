"""Stripe Checkout through the official `stripe` package.

The pay link is this shop's `/payments/stripe/pay/<payment id>/`: opened, it creates the order's
Checkout Session (idempotency key `checkout:<payment id>`, so a second visit gets the same session) and
sends the buyer to Stripe. Creating it there, not at checkout, keeps the network call out of the
checkout's transaction. The webhook (`/payments/stripe/webhook/`) is verified with
`stripe.Webhook.construct_event` (tolerance 300 s) before anything is read, and understood as:

| Stripe event | the shop's event |
|---|---|
| `checkout.session.completed` (paid), `checkout.session.async_payment_succeeded` | `payment.succeeded` |
| `checkout.session.async_payment_failed` | `payment.failed` |
| `charge.refunded` | `payment.refunded`: beyond the shop's own refunds, made at Stripe: taken back |
| `charge.dispute.created` | `chargeback.created`: the money is gone; the merchant's share is taken back |

Refunds are `Refund.create` with the shop's key as idempotency key and in the metadata; Stripe takes
the money from the platform's balance when it accepts the refund, so its answer settles it.
"""

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

from core.money import Currency
from escrow.gateways.base import (
    GatewayConnectionError,
    GatewayEvent,
    GatewayRecord,
    RefundDeclined,
    WebhookIgnored,
    WebhookRejected,
    amount_check,
    body_check,
    event_id_check,
    own_records,
    reference_check,
    shop_url,
)

SIGNATURE_HEADER = "Stripe-Signature"
TOLERANCE_SECONDS = 300


def client():
    import stripe

    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, max_network_retries=2)


def _amount_currency(obj: Mapping, amount_field: str) -> tuple[int, str]:
    currency = str(obj["currency"]).upper()
    if currency not in Currency.values:
        raise ValueError("currency")
    amount = obj[amount_field]
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ValueError("amount")
    return amount, currency


class StripeGateway:
    name = "stripe"
    currencies = None
    refunds_by_hand = False
    refund_settles_on_answer = True

    def is_configured(self) -> bool:
        return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)

    def payment_id_new(self) -> str:
        return "stp_" + secrets.token_hex(12)

    def pay_url(self, *, payment, return_url: str, method: str = "") -> str:
        path = reverse("stripe:pay", kwargs={"payment_id": payment.payment_id})
        return f"{path}?{urlencode({'return': return_url})}"

    def checkout_session_url(self, *, payment, return_url: str) -> str:
        """The Checkout Session of `payment` (created once per payment), as the URL Stripe sends the buyer to."""
        order = payment.order
        session = client().v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "client_reference_id": payment.payment_id,
                "customer_email": order.email,
                "line_items": [
                    {
                        "quantity": order.quantity,
                        "price_data": {
                            "currency": payment.currency.lower(),
                            "unit_amount": order.unit_price,
                            "product_data": {"name": order.product.title[:250] or payment.payment_id},
                        },
                    }
                ],
                "metadata": {"payment_id": payment.payment_id, "order": str(order.pk)},
                "payment_intent_data": {"metadata": {"payment_id": payment.payment_id, "order": str(order.pk)}},
                "success_url": shop_url(return_url),
                "cancel_url": shop_url(return_url),
            },
            options={"idempotency_key": f"checkout:{payment.payment_id}"},
        )
        return session.url

    def webhook_parse(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> GatewayEvent:
        import stripe

        if not self.is_configured():
            raise WebhookRejected("The stripe gateway is not configured.")
        try:
            stripe.Webhook.construct_event(
                body, headers.get(SIGNATURE_HEADER), settings.STRIPE_WEBHOOK_SECRET, tolerance=TOLERANCE_SECONDS
            )
        except stripe.SignatureVerificationError:
            raise WebhookRejected("Signature does not match.") from None
        except ValueError:
            raise WebhookRejected("Malformed event body.") from None
        try:
            data = json.loads(body)
            event_id, stripe_type, obj = data["id"], data["type"], data["data"]["object"]
            event_id_check(event_id)
            body_check(data)
            event = _event(event_id=event_id, stripe_type=stripe_type, obj=obj, data=data)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise WebhookRejected("Malformed event body.") from None
        if event is None:
            raise WebhookIgnored(data.get("type", ""))
        return event

    def refund_request(self, *, payment_id: str, amount: int, currency: str, idempotency_key: str) -> str:
        import stripe

        from escrow.models import Payment

        payment_intent = (
            Payment.objects.filter(gateway=self.name, payment_id=payment_id)
            .values_list("provider_reference", flat=True)
            .first()
        )
        if not payment_intent:
            raise RefundDeclined(f"Payment {payment_id} has no PaymentIntent at Stripe.")
        try:
            refund = client().v1.refunds.create(
                params={
                    "payment_intent": payment_intent,
                    "amount": amount,
                    "metadata": {"refund_reference": idempotency_key, "payment_id": payment_id},
                },
                options={"idempotency_key": idempotency_key},
            )
        except (stripe.APIConnectionError, stripe.RateLimitError) as error:
            raise GatewayConnectionError(str(error)) from None
        except stripe.StripeError as error:
            raise RefundDeclined(f"Stripe refused the refund: {error}") from None
        if refund.status in ("failed", "canceled"):
            raise RefundDeclined(f"Stripe refund {refund.id} is {refund.status}.")
        return refund.id

    def records(self, *, since: datetime, until: datetime) -> list[GatewayRecord]:
        # Stripe's balance transactions could be listed here; until then, the shop's own settled rows.
        return own_records(gateway=self.name, since=since, until=until)


def _event(*, event_id: str, stripe_type: str, obj: Mapping, data: dict) -> GatewayEvent | None:
    common = {"event_id": event_id, "body": data}
    if stripe_type.startswith("checkout.session."):
        payment_id = obj.get("client_reference_id") or (obj.get("metadata") or {}).get("payment_id") or ""
        reference_check(payment_id)
        amount, currency = _amount_currency(obj, "amount_total")
        payment_intent = obj.get("payment_intent") or ""
        if stripe_type == "checkout.session.async_payment_failed":
            kind = "payment.failed"
        elif stripe_type == "checkout.session.async_payment_succeeded" or (
            stripe_type == "checkout.session.completed" and obj.get("payment_status") == "paid"
        ):
            kind = "payment.succeeded"
        elif stripe_type == "checkout.session.completed":
            kind = "payment.noted"  # paid later by a slower method: async_payment_succeeded follows
        else:
            return None
        if kind == "payment.succeeded":
            amount_check(amount)
        return GatewayEvent(
            type=kind,
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            provider_reference=reference_check(payment_intent) if payment_intent else "",
            **common,
        )
    if stripe_type == "charge.refunded":
        # Cumulative: everything refunded on the charge so far, by the shop or at Stripe's dashboard.
        amount, currency = _amount_currency(obj, "amount_refunded")
        return GatewayEvent(
            type="payment.refunded",
            payment_id="",
            amount=amount_check(amount),
            currency=currency,
            provider_reference=reference_check(obj["payment_intent"]),
            chargeback_id=reference_check(obj["id"]),
            **common,
        )
    if stripe_type == "charge.dispute.created":
        amount, currency = _amount_currency(obj, "amount")
        return GatewayEvent(
            type="chargeback.created",
            payment_id="",
            amount=amount_check(amount),
            currency=currency,
            provider_reference=reference_check(obj["payment_intent"]),
            chargeback_id=reference_check(obj["id"]),
            **common,
        )
    return None
