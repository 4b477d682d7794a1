"""The sandbox "provider" side: it tells the shop about a refund it paid, as a real provider would."""

import time

from celery import shared_task
from django.utils import timezone

from core.money import to_major


@shared_task(name="sandbox.refund_webhook_send", acks_late=True, autoretry_for=(ConnectionError,), max_retries=5)
def sandbox_refund_webhook_send_task(
    *, payment_id: str, refund_id: str, amount: int, currency: str, refund_reference: str = ""
) -> None:
    from escrow import services
    from escrow.gateways.sandbox.gateway import SIGNATURE_HEADER, event_body, signature_header

    # One event id per refund: a resend is the same event and the shop drops it as a duplicate.
    body = event_body(
        event_type="refund.succeeded",
        payment_id=payment_id,
        amount=to_major(amount, currency),
        currency=currency,
        event_id=f"evt_{refund_id}",
        refund_id=refund_id,
        refund_reference=refund_reference,
    )
    services.webhook_receive(
        gateway_name="sandbox",
        body=body,
        now=timezone.now(),
        headers={SIGNATURE_HEADER: signature_header(body=body, timestamp=int(time.time()))},
    )
