"""One way for a request to see an order's keys (order page, its keys fragment, the API)."""

from django.http import HttpRequest
from django.utils import timezone

from core.client_ip import client_ip
from core.device import device_id
from escrow import services
from escrow.models import Order


def keys_reveal_for_request(request: HttpRequest, order: Order, *, channel: str) -> list[str]:
    """Reveal `order`'s keys to whoever sent `request`, recorded with their address, browser, device and account.

    Raises what `services.order_keys_reveal` raises (`KeysNotDelivered`, `RateLimited`); nothing is
    recorded then. `order` was just read by the request, so an undelivered one is refused here with no
    further statement (the buyer polls this until the keys are there)."""
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
