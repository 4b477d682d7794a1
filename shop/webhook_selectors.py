"""Reads of merchants' webhook endpoints and their delivery logs, always scoped to the merchant: another
merchant's endpoint or delivery is simply not found (404)."""

from django.db.models import QuerySet
from django.http import Http404

from shop.models import Merchant, WebhookDelivery, WebhookEndpoint

DELIVERY_PAGE = 50


def merchant_webhook_endpoints(*, merchant: Merchant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(merchant=merchant).order_by("-pk")


def merchant_webhook_endpoint(*, merchant: Merchant, pk: int) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(merchant=merchant, pk=pk).select_related("merchant__user").first()
    if endpoint is None:
        raise Http404
    return endpoint


def endpoint_deliveries(*, endpoint: WebhookEndpoint, before: int | None = None, limit: int = DELIVERY_PAGE) -> list:
    """The endpoint's deliveries, newest first, `limit` of them below the id `before` (a cursor)."""
    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint).select_related("event").order_by("-pk")
    if before is not None:
        deliveries = deliveries.filter(pk__lt=before)
    return list(deliveries[:limit])


def merchant_webhook_delivery(*, merchant: Merchant, pk: int) -> WebhookDelivery:
    delivery = (
        WebhookDelivery.objects.filter(endpoint__merchant=merchant, pk=pk).select_related("endpoint", "event").first()
    )
    if delivery is None:
        raise Http404
    return delivery
