"""One way for a request to see an order's keys (order page, its keys fragment, the API).

A paid order's keys are assigned by the Celery worker a few milliseconds after the payment commits,
while the buyer's first request for them often arrives sooner. So a request that finds the order paid
and its delivery in flight waits for it, up to ORDER_KEYS_WAIT_SECONDS: with the cache on Redis it
blocks on the delivery's announcement (escrow.delivery: the worker pushes one when the delivery
commits), re-reading the order's status when woken and at least every 100 ms; elsewhere it re-reads
the status with a growing pause (5 ms, 10 ms, … at most 100 ms). The buyer gets the keys the moment
they are theirs instead of a 409 and another request later. Only orders in `paid` wait (not an unpaid order, nor
one held for review), only ORDER_KEYS_WAITERS requests per process at once, and (with Redis) only
while deliveries flow: a few seconds after the last delivery announced (escrow.delivery,
DELIVERING_SECONDS), requests answer at once. So stopped workers hold no web process for long, even
with one-request-at-a-time (sync) gunicorn workers; the first purchase of a shop idle that long polls
a second time.
"""

import threading
import time

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from core.client_ip import client_ip
from core.device import device_id
from escrow import services
from escrow.delivery import deliveries_flowing, order_delivered_wait
from escrow.models import Order, OrderStatus
from escrow.selectors import order_status_read

LOOK_AGAIN_SECONDS = 0.1  # the longest a waiting request goes without reading the order's status

_waiters: threading.BoundedSemaphore | None = None
_waiters_size = 0
_waiters_lock = threading.Lock()


def _waiter_slots() -> threading.BoundedSemaphore:
    global _waiters, _waiters_size
    size = max(0, settings.ORDER_KEYS_WAITERS)
    with _waiters_lock:
        if _waiters is None or _waiters_size != size:
            _waiters, _waiters_size = threading.BoundedSemaphore(size), size
        return _waiters


def order_delivery_wait(order: Order) -> Order:
    """If `order` is paid and its delivery in flight, wait until it holds keys (or stops being `paid`,
    or ORDER_KEYS_WAIT_SECONDS pass); returns the order as last read (its status only, the rest read
    on use). One status read per look."""
    if order.status != OrderStatus.PAID or settings.ORDER_KEYS_WAIT_SECONDS <= 0 or not deliveries_flowing():
        return order
    slots = _waiter_slots()
    if not slots.acquire(blocking=False):
        return order
    try:
        deadline = time.monotonic() + settings.ORDER_KEYS_WAIT_SECONDS
        pause = 0.005
        while order.status == OrderStatus.PAID:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # Woken by the delivering worker's announcement (Redis), else after at most 100 ms; without
            # Redis, a growing pause. Either way the order's status decides.
            if order_delivered_wait(order_pk=order.pk, seconds=min(LOOK_AGAIN_SECONDS, left)) is None:
                time.sleep(min(pause, left))
                pause = min(pause * 2, LOOK_AGAIN_SECONDS)
            order = order_status_read(pk=order.pk) or order
    finally:
        slots.release()
    return order


def keys_reveal_for_request(request: HttpRequest, order: Order, *, channel: str) -> list[str]:
    """Reveal `order`'s keys to whoever sent `request`, recorded with their address, browser, device and account.

    Raises what `services.order_keys_reveal` raises (`KeysNotDelivered`, `RateLimited`); nothing is
    recorded then. `order` was just read by the request, so an undelivered one is refused here with no
    further statement (the buyer polls this until the keys are there), unless its delivery is in flight
    (`order_delivery_wait`)."""
    order = order_delivery_wait(order)
    if not order.has_keys:
        raise services.KeysNotDelivered(order.pk)
    return services.order_keys_reveal(
        order=order,
        now=timezone.now(),
        channel=channel,
        ip=client_ip(request) or None,
        user_agent=request.headers.get("User-Agent", ""),
        user=request.user,
        device=device_id(request),
    )
