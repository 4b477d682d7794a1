"""Telling the merchant about a newly paid order: an inbox line and an e-mail (`X-Shop-Event: order.paid`),
switchable in the merchant's settings (`Merchant.notify_paid_orders`).

Sent after the delivery commits, by the worker that delivered (escrow.services.order_deliver), so a
purchase costs one task; only if that fails is a retrying task queued. Safe to run twice: the inbox
line has a unique key per order, and the e-mail goes only while that line is not there yet.
"""

import logging

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import Notification
from accounts.services import notification_post
from core.mail import mail_send
from core.money import display
from escrow.models import Order

logger = logging.getLogger(__name__)
EVENT = "order.paid"


def order_paid_notify_enqueue(*, order_pk: int) -> None:
    """Queue the notification; never raises (a broker outage must not fail the committed payment)."""
    from escrow.tasks import order_paid_notify_task

    try:
        order_paid_notify_task.delay(order_pk=order_pk)
    except Exception:  # a lost notification is a nuisance, never a lost order
        logger.warning("escrow.order_paid_notify_enqueue_failed", extra={"order": order_pk}, exc_info=True)


def order_paid_notify_after_delivery(*, order_pk: int) -> None:
    """Notify now, in the delivering process; on any error leave it to the retrying task. Never raises:
    the order is delivered whatever happens to the merchant's message."""
    try:
        order_paid_notify(order_pk=order_pk)
    except Exception:
        logger.warning("escrow.order_paid_notify_failed", extra={"order": order_pk}, exc_info=True)
        order_paid_notify_enqueue(order_pk=order_pk)


def order_paid_notify(*, order_pk: int) -> bool:
    """E-mail the merchant and post the inbox line, in the merchant's language; False if they switched
    it off or were already told. A mail error propagates (the task retries) and writes no line."""
    order = Order.objects.select_related("merchant__user", "product").get(pk=order_pk)
    merchant = order.merchant
    user = merchant.user
    key = f"order:{order.pk}:paid"
    if not merchant.notify_paid_orders or Notification.objects.filter(user=user, key=key).exists():
        return False
    url = reverse("merchant_orders:detail", kwargs={"pk": order.pk})
    with translation.override(user.language or settings.LANGUAGE_CODE):
        text = _("New paid order %(pk)s: %(quantity)s x %(title)s, %(amount)s") % {
            "pk": order.pk,
            "quantity": order.quantity,
            "title": order.product.title,
            "amount": display(order.amount, order.currency),
        }
        if user.email:
            mail_send(
                event=EVENT,
                subject=text,
                body=_("%(text)s\n\nSee the order: %(url)s\n\nYou can switch these messages off in your settings.")
                % {"text": text, "url": settings.SHOP_BASE_URL.rstrip("/") + url},
                to=[user.email],
            )
    with transaction.atomic():
        notification_post(
            user_pks=[user.pk],
            event=EVENT,
            subject=f"order:{order.pk}",
            key=key,
            text=text,
            url=url,
            now=timezone.now(),
        )
    return True
