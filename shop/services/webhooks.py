"""Webhooks to merchants: endpoints, the outbox of events, delivery with back-off, and giving up.

- **Emitting** (`webhook_emit`, `webhook_emit_many`) runs inside the transaction of what happened (an
  order paid, a dispute decided, …): one event row and a delivery row per subscribed endpoint commit
  with it, or not at all (the outbox). A merchant without an active endpoint costs one indexed query,
  or none when the caller passes the merchant's `has_webhook_endpoints` (kept in step here) and it is False.
  The send is queued on commit; should the broker be down, the sweeper (`webhook_deliveries_due`, on the
  beat) finds the row anyway.
- **Sending** (`webhook_delivery_attempt`) claims a due row by compare-and-set (a lease, so a sweep and
  a task never post the same row at once), posts with no transaction open, then records the answer.
  A failure is retried after 1 min, 5 min, 30 min, 2 h, 6 h, 12 h, then daily, for 3 days
  (`WEBHOOK_RETRY_DAYS`); the last attempt is at the deadline. Then the delivery fails, the endpoint is
  disabled (its other pending deliveries fail too) and the merchant is told by e-mail and in the inbox.
- **Bodies** carry ids, statuses and amounts only. `_data_check` refuses any field outside
  `DATA_FIELDS`, so a card key cannot slip into an event by a careless caller.
"""

import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils.translation import gettext as _

from accounts.models import AuditAction
from accounts.services import audit_record, notification_post
from core import crypto
from shop import webhook_sending
from shop.models import (
    WEBHOOK_DELIVERY_TRANSITIONS,
    WEBHOOK_ENDPOINT_TRANSITIONS,
    Merchant,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEndpointStatus,
    WebhookEvent,
    WebhookEventType,
)
from shop.services.errors import ShopError

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
WEBHOOK_RETRY_DAYS = 3
# After the n-th failed attempt, the next comes this much later (the last entry repeats).
RETRY_DELAYS = [
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(hours=24),
]
# A claimed delivery is the claimer's for this long: longer than the connect + read timeouts.
CLAIM_LEASE = timedelta(minutes=2)
MAX_ENDPOINTS_PER_MERCHANT = 16
# Every field name an event's data may hold, at any depth. Nothing that could carry a key's text.
DATA_FIELDS = frozenset(
    {
        "order",
        "dispute",
        "product",
        "withdrawal",
        "id",
        "status",
        "amount",
        "currency",
        "quantity",
        "product_id",
        "order_id",
        "title",
        "available",
        "threshold",
        "refund",
        "reason",
        "outcome",
        "buyer_percent",
        "key_count",
        "full",
    }
)


class WebhookEndpointRefused(ShopError):
    code_statuses = {**ShopError.code_statuses, "webhook_endpoint_limit": 409, "webhook_endpoint_disabled": 409}


def secret_aad(endpoint_pk: int) -> bytes:
    return b"shop.webhook_endpoint.secret:%d" % endpoint_pk


def endpoint_secret(endpoint: WebhookEndpoint) -> str:
    """The endpoint's signing secret, unsealed (for signing only; never shown after creation/rotation)."""
    return crypto.unseal(
        bytes(endpoint.secret_sealed),
        associated_data=secret_aad(endpoint.pk),
        what=f"the secret of webhook endpoint {endpoint.pk}",
    ).decode()


def _secret_new() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _events_check(events: object) -> list[str]:
    if isinstance(events, str) or not isinstance(events, Iterable):
        events = []
    chosen = [e for e in events if isinstance(e, str)]
    if not chosen or len(chosen) != len(list(events)) or not set(chosen) <= set(WebhookEventType.values):
        raise WebhookEndpointRefused(
            _("Choose one or more of the listed events: %(events)s.") % {"events": ", ".join(WebhookEventType.values)},
            "webhook_events_invalid",
        )
    return [e for e in WebhookEventType.values if e in set(chosen)]  # canonical order, no repeats


def webhook_url_check(url: str) -> str:
    """The URL, stripped, if we may post to it now; `WebhookEndpointRefused` otherwise (https in
    production; public addresses only, looked up now)."""
    try:
        webhook_sending.destination_resolve(url)
    except webhook_sending.DestinationRefused as refused:
        raise WebhookEndpointRefused(str(refused), refused.code) from None
    return url.strip()


def webhook_endpoint_create(
    *, merchant: Merchant, url: str, events: object, now: datetime, description: str = ""
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it with its signing secret, shown this once. Refused (nothing
    created) for a bad or non-public URL, an unknown event, or past `MAX_ENDPOINTS_PER_MERCHANT`."""
    chosen = _events_check(events)
    url = webhook_url_check(url)  # a DNS lookup: before the transaction, not inside it
    return _endpoint_create(merchant=merchant, url=url, events=chosen, description=description, now=now)


@transaction.atomic(durable=True)
def _endpoint_create(
    *, merchant: Merchant, url: str, events: list[str], description: str, now: datetime
) -> tuple[WebhookEndpoint, str]:
    # One creator (or deleter) at a time per merchant, which keeps `has_webhook_endpoints` in step.
    Merchant.objects.select_for_update().filter(pk=merchant.pk).first()
    if WebhookEndpoint.objects.filter(merchant=merchant).count() >= MAX_ENDPOINTS_PER_MERCHANT:
        raise WebhookEndpointRefused(
            _("You have %(count)s endpoints, the most allowed: delete one first.")
            % {"count": MAX_ENDPOINTS_PER_MERCHANT},
            "webhook_endpoint_limit",
        )
    endpoint = WebhookEndpoint.objects.create(
        merchant=merchant,
        url=url,
        events=events,
        description=" ".join(description.split())[:100],
        secret_sealed=b"",
        created_at=now,
    )
    secret = _secret_new()
    endpoint.secret_sealed = crypto.seal(secret.encode(), associated_data=secret_aad(endpoint.pk))
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret_sealed=endpoint.secret_sealed)
    Merchant.objects.filter(pk=merchant.pk, has_webhook_endpoints=False).update(has_webhook_endpoints=True)
    audit_record(
        action=AuditAction.WEBHOOK_ENDPOINT_CREATED,
        subject=endpoint,
        now=now,
        actor=merchant.user,
        data={"url": url, "events": events},
    )
    return endpoint, secret


@transaction.atomic(durable=True)
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, now: datetime) -> None:
    """Delete the endpoint with its delivery log; nothing more is sent to it."""
    Merchant.objects.select_for_update().filter(pk=endpoint.merchant_id).first()  # as _endpoint_create
    audit_record(
        action=AuditAction.WEBHOOK_ENDPOINT_DELETED,
        subject=endpoint,
        now=now,
        actor=endpoint.merchant.user,
        data={"url": endpoint.url},
    )
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()
    if not WebhookEndpoint.objects.filter(merchant_id=endpoint.merchant_id).exists():
        Merchant.objects.filter(pk=endpoint.merchant_id).update(has_webhook_endpoints=False)


@transaction.atomic(durable=True)
def webhook_endpoint_secret_rotate(*, endpoint: WebhookEndpoint, now: datetime) -> str:
    """A fresh signing secret (returned, shown this once); the old one stops signing at once."""
    secret = _secret_new()
    sealed = crypto.seal(secret.encode(), associated_data=secret_aad(endpoint.pk))
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret_sealed=sealed, secret_rotated_at=now)
    endpoint.secret_sealed, endpoint.secret_rotated_at = sealed, now
    audit_record(action=AuditAction.WEBHOOK_SECRET_ROTATED, subject=endpoint, now=now, actor=endpoint.merchant.user)
    return secret


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint, now: datetime) -> WebhookEndpoint:
    """Turn a disabled endpoint back on (its URL checked again). Failed deliveries stay failed: resend
    the ones still wanted from the log."""
    webhook_url_check(endpoint.url)
    return _endpoint_enable(endpoint=endpoint, now=now)


@transaction.atomic(durable=True)
def _endpoint_enable(*, endpoint: WebhookEndpoint, now: datetime) -> WebhookEndpoint:
    WEBHOOK_ENDPOINT_TRANSITIONS.apply(
        model=WebhookEndpoint,
        pk=endpoint.pk,
        to=WebhookEndpointStatus.ACTIVE,
        mirror=endpoint,
        disabled_reason="",
        disabled_at=None,
    )
    audit_record(action=AuditAction.WEBHOOK_ENDPOINT_ENABLED, subject=endpoint, now=now, actor=endpoint.merchant.user)
    return endpoint


# --- emitting: the outbox ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEventSpec:
    merchant_pk: int
    type: str
    data: dict = field(default_factory=dict)
    # The merchant's `has_webhook_endpoints`, when the caller read the merchant's row in this transaction
    # anyway (None: not known, so the endpoints are looked up). False skips the look-up.
    merchant_has_endpoints: bool | None = None


def _data_check(value: object) -> None:
    if isinstance(value, dict):
        for name, inner in value.items():
            if name not in DATA_FIELDS:
                raise ValueError(f"Webhook data may not carry the field {name!r} (see DATA_FIELDS).")
            _data_check(inner)
    elif isinstance(value, list):
        for inner in value:
            _data_check(inner)
    elif not (value is None or isinstance(value, (str, int, bool))):
        raise ValueError(f"Webhook data holds a {type(value).__name__}; send strings and integers.")


def webhook_emit(
    *, merchant_pk: int, event_type: str, data: dict, now: datetime, merchant_has_endpoints: bool | None = None
) -> int:
    """Record one event for the merchant's subscribed active endpoints, inside the caller's transaction;
    returns how many deliveries it made (0, after one indexed query, for a merchant with none; 0 and no
    query when the caller passes the merchant's `has_webhook_endpoints` and it is False)."""
    spec = WebhookEventSpec(merchant_pk, event_type, data, merchant_has_endpoints=merchant_has_endpoints)
    return webhook_emit_many(events=[spec], now=now)


def webhook_emit_many(*, events: list[WebhookEventSpec], now: datetime) -> int:
    """`webhook_emit` for a batch (a release sweep): one query for the endpoints of all their merchants."""
    assert transaction.get_connection().in_atomic_block, "emit inside the transaction of the event"
    for spec in events:
        if spec.type not in WebhookEventType.values:
            raise ValueError(f"Unknown webhook event type {spec.type!r}.")
        _data_check(spec.data)
    # Merchants known (from their row, read in this transaction) to have no endpoint need no look-up.
    events = [spec for spec in events if spec.merchant_has_endpoints is not False]
    if not events:
        return 0
    endpoints: dict[int, list[tuple[int, list]]] = {}
    for pk, merchant_pk, subscribed in WebhookEndpoint.objects.filter(
        merchant_id__in={spec.merchant_pk for spec in events}, status=WebhookEndpointStatus.ACTIVE
    ).values_list("pk", "merchant_id", "events"):
        endpoints.setdefault(merchant_pk, []).append((pk, subscribed))
    if not endpoints:
        return 0
    created = int(now.timestamp())
    rows, targets = [], []
    for spec in events:
        wanted = [pk for pk, subscribed in endpoints.get(spec.merchant_pk, []) if spec.type in subscribed]
        if not wanted:
            continue
        public_id = "evt_" + secrets.token_hex(12)
        body = json.dumps(
            {"id": public_id, "type": spec.type, "created": created, "data": spec.data},
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        )
        rows.append(
            WebhookEvent(public_id=public_id, merchant_id=spec.merchant_pk, type=spec.type, body=body, created_at=now)
        )
        targets.append(wanted)
    if not rows:
        return 0
    WebhookEvent.objects.bulk_create(rows)  # PostgreSQL and SQLite both return the new ids
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                endpoint_id=endpoint_pk,
                event_id=event.pk,
                next_attempt_at=now,
                give_up_at=now + timedelta(days=WEBHOOK_RETRY_DAYS),
                created_at=now,
            )
            for event, wanted in zip(rows, targets, strict=True)
            for endpoint_pk in wanted
        ]
    )
    pks = [delivery.pk for delivery in deliveries]
    transaction.on_commit(lambda: _deliveries_enqueue(pks), robust=True)
    return len(pks)


def _deliveries_enqueue(pks: list[int]) -> None:
    """Queue the sends; if the broker is down, log it and leave them to the sweeper."""
    from shop.tasks import webhook_deliver_task

    for pk in pks:
        try:
            webhook_deliver_task.delay(delivery_pk=pk)
        except Exception:  # any broker failure: the sweeper re-queues the row
            logger.warning("shop.webhook_enqueue_failed", extra={"delivery": pk}, exc_info=True)
            return


# --- sending ------------------------------------------------------------------------------------------


def next_attempt_after(*, attempts: int, now: datetime, give_up_at: datetime) -> datetime | None:
    """When to try again after `attempts` failed attempts, or None to give up: the schedule's delay,
    but never later than the deadline; an attempt made at or past the deadline was the last."""
    if now >= give_up_at:
        return None
    delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
    return min(now + delay, give_up_at)


def _claim(*, delivery_pk: int, now: datetime) -> bool:
    """Take a due delivery for one attempt (compare-and-set on its due time); False if it is not due, not
    pending, its endpoint is disabled, or another worker has it."""
    return (
        WebhookDelivery.objects.filter(
            pk=delivery_pk,
            status=WebhookDeliveryStatus.PENDING,
            next_attempt_at__lte=now,
            endpoint__status=WebhookEndpointStatus.ACTIVE,
        ).update(next_attempt_at=now + CLAIM_LEASE, attempts=F("attempts") + 1, last_attempt_at=now)
        == 1
    )


def webhook_delivery_attempt(*, delivery_pk: int, now: datetime) -> str | None:
    """Make one attempt at a due delivery and record it; returns its status after, or None when there
    was nothing to do (not due, already done, taken by another worker). Safe to run twice."""
    if not _claim(delivery_pk=delivery_pk, now=now):
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint", "event").get(pk=delivery_pk)
    result = webhook_sending.post(
        url=delivery.endpoint.url,
        body=delivery.event.body.encode(),
        secret=endpoint_secret(delivery.endpoint),
        timestamp=int(now.timestamp()),
        event_type=delivery.event.type,
        event_id=delivery.event.public_id,
    )
    return _attempt_record(delivery=delivery, result=result, now=now)


@transaction.atomic(durable=True)
def _attempt_record(*, delivery: WebhookDelivery, result: webhook_sending.PostResult, now: datetime) -> str:
    fields = {"last_response_code": result.status_code, "last_error": result.error[:200]}
    if result.ok:
        WEBHOOK_DELIVERY_TRANSITIONS.update(
            queryset=WebhookDelivery.objects.filter(pk=delivery.pk),
            to=WebhookDeliveryStatus.SUCCEEDED,
            next_attempt_at=None,
            **fields,
        )
        logger.info("shop.webhook_delivered", extra={"delivery": delivery.pk, "code": result.status_code})
        return WebhookDeliveryStatus.SUCCEEDED
    retry_at = next_attempt_after(attempts=delivery.attempts, now=now, give_up_at=delivery.give_up_at)
    logger.warning(
        "shop.webhook_failed",
        extra={"delivery": delivery.pk, "attempt": delivery.attempts, "error": result.error, "retry_at": retry_at},
    )
    if retry_at is not None:
        WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDeliveryStatus.PENDING).update(
            next_attempt_at=retry_at, **fields
        )
        return WebhookDeliveryStatus.PENDING
    WEBHOOK_DELIVERY_TRANSITIONS.update(
        queryset=WebhookDelivery.objects.filter(pk=delivery.pk),
        to=WebhookDeliveryStatus.FAILED,
        next_attempt_at=None,
        **fields,
    )
    _endpoint_disable_failing(endpoint=delivery.endpoint, now=now)
    return WebhookDeliveryStatus.FAILED


def _endpoint_disable_failing(*, endpoint: WebhookEndpoint, now: datetime) -> None:
    """Three days of failures: disable the endpoint, fail what it still had pending, tell the merchant
    (inbox now, e-mail after commit). Once: a second caller finds it disabled already."""
    moved = WEBHOOK_ENDPOINT_TRANSITIONS.update(
        queryset=WebhookEndpoint.objects.filter(pk=endpoint.pk),
        to=WebhookEndpointStatus.DISABLED,
        from_=[WebhookEndpointStatus.ACTIVE],
        disabled_reason="failing",
        disabled_at=now,
    )
    if moved != 1:
        return
    WEBHOOK_DELIVERY_TRANSITIONS.update(
        queryset=WebhookDelivery.objects.filter(endpoint_id=endpoint.pk),
        to=WebhookDeliveryStatus.FAILED,
        from_=[WebhookDeliveryStatus.PENDING],
        next_attempt_at=None,
        last_error="endpoint disabled",
    )
    audit_record(action=AuditAction.WEBHOOK_ENDPOINT_DISABLED, subject=endpoint, now=now, data={"reason": "failing"})
    from django.urls import reverse

    notification_post(
        user_pks=[endpoint.merchant.user_id],
        event="webhook.endpoint_disabled",
        subject=_("Webhook endpoint disabled"),
        text=_("%(url)s failed for %(days)s days and was disabled. Fix it, then enable it again.")
        % {"url": endpoint.url, "days": WEBHOOK_RETRY_DAYS},
        url=reverse("merchant_webhooks:detail", args=[endpoint.pk]),
        now=now,
    )
    from shop.tasks import webhook_endpoint_disabled_email_task

    transaction.on_commit(lambda: webhook_endpoint_disabled_email_task.delay(endpoint_pk=endpoint.pk), robust=True)
    logger.warning("shop.webhook_endpoint_disabled", extra={"endpoint": endpoint.pk})


def webhook_deliveries_due(*, now: datetime, batch: int = 500) -> list[int]:
    """The pending deliveries due now whose endpoint is active (the sweeper queues each)."""
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookDeliveryStatus.PENDING,
            next_attempt_at__lte=now,
            endpoint__status=WebhookEndpointStatus.ACTIVE,
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:batch]
    )


@transaction.atomic(durable=True)
def webhook_delivery_resend(*, delivery: WebhookDelivery, now: datetime) -> WebhookDelivery:
    """Send a delivery again now, with a fresh 3-day schedule (the same event id and body: the
    merchant's receiver can tell it is the same event). Refused while its endpoint is disabled."""
    endpoint = WebhookEndpoint.objects.get(pk=delivery.endpoint_id)
    # Its status as stored now, not as the caller last read it (a worker may have sent it since).
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
    if not endpoint.is_active:
        raise WebhookEndpointRefused(_("This endpoint is disabled: enable it first."), "webhook_endpoint_disabled")
    if delivery.status == WebhookDeliveryStatus.PENDING:
        WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDeliveryStatus.PENDING).update(next_attempt_at=now)
    else:
        WEBHOOK_DELIVERY_TRANSITIONS.apply(
            model=WebhookDelivery,
            pk=delivery.pk,
            to=WebhookDeliveryStatus.PENDING,
            from_=[delivery.status],
            next_attempt_at=now,
            give_up_at=now + timedelta(days=WEBHOOK_RETRY_DAYS),
            attempts=0,
        )
    transaction.on_commit(lambda: _deliveries_enqueue([delivery.pk]), robust=True)
    delivery.refresh_from_db()
    return delivery


@transaction.atomic
def webhook_secrets_reseal(*, now: datetime) -> tuple[int, int]:
    """Re-seal every endpoint's secret under the newest master key (part of `rotate_master_key`); all or
    nothing. Returns (re-sealed, already on the newest key)."""
    resealed = current = 0
    for endpoint in WebhookEndpoint.objects.select_for_update().order_by("pk"):
        fresh = crypto.resealed(
            bytes(endpoint.secret_sealed),
            associated_data=secret_aad(endpoint.pk),
            what=f"the secret of webhook endpoint {endpoint.pk}",
        )
        if fresh is None:
            current += 1
            continue
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret_sealed=fresh)
        audit_record(action=AuditAction.WEBHOOK_SECRET_RESEALED, subject=endpoint, now=now)
        resealed += 1
    return resealed, current
