"""E-mails and inbox lines about orders.

The buyer's e-mails (`order_email`): each in the language they checked out in, as plain text and HTML,
each with the link to the order page (escrow/links.py). Sent by `escrow.tasks.order_email_task` after
the commit of what they report; the page stays the truth, so a lost e-mail loses nothing.

The merchant's notice of a new paid order (`order_paid_notify`): an inbox line and an e-mail
(`X-Shop-Event: order.paid`), switchable in the merchant's settings (`Merchant.notify_paid_orders`).

Both about a delivery are sent after it commits, by the worker that delivered
(`order_delivered_notify`, from escrow.services.order_deliver), so a purchase costs one task; only if
that fails is a retrying task queued. Safe to run twice: the inbox
line has a unique key per order, and the e-mail goes only while that line is not there yet.

The checkout queues no e-mail: the beat's batch (`orders_link_email_due`) mails the link to the orders
that still have no keys ORDER_LINK_EMAIL_DELAY_SECONDS after checkout (unpaid, or held for review);
a buyer who paid sooner finds the same link in the "keys ready" e-mail.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import Notification, User
from accounts.services import notification_post
from core import prepared
from core.mail import mail_send
from core.money import display
from escrow.links import order_link
from escrow.models import ORDER_LINK_EMAIL_STATUSES, Order
from shop.models import Merchant, Product

logger = logging.getLogger(__name__)
EVENT = "order.paid"
ORDER_EMAIL_EVENTS = ("placed", "delivered", "refunded", "lookup")


# --- the link to an order not delivered a minute after checkout ---------------------------------------

_LINK_CLAIM_SQL = f"""
    UPDATE {Order._meta.db_table} SET link_emailed_at = %(now)s
    WHERE id IN (
        SELECT id FROM {Order._meta.db_table}
        WHERE link_emailed_at IS NULL AND status = ANY(%(statuses)s) AND created_at <= %(placed_before)s
        ORDER BY created_at LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
"""  # noqa: S608


def _orders_link_email_claim(*, now: datetime, batch: int) -> list[int]:
    """Mark up to `batch` due orders e-mailed and return them, in the caller's transaction.

    On PostgreSQL one `UPDATE … RETURNING` over rows taken with `SKIP LOCKED` (an order a payment holds
    waits for the next beat), so two sweeps at once never claim the same order."""
    placed_before = now - timedelta(seconds=settings.ORDER_LINK_EMAIL_DELAY_SECONDS)
    due = Order.objects.filter(
        link_emailed_at__isnull=True, status__in=ORDER_LINK_EMAIL_STATUSES, created_at__lte=placed_before
    )
    if connection.vendor != "postgresql":  # SQLite writes one at a time: each compare-and-set decides
        pks = list(due.order_by("created_at").values_list("pk", flat=True)[:batch])
        return [pk for pk in pks if due.filter(pk=pk).update(link_emailed_at=now)]
    params = {"now": now, "statuses": ORDER_LINK_EMAIL_STATUSES, "placed_before": placed_before, "batch": batch}
    with connection.cursor() as cursor:
        cursor.execute(_LINK_CLAIM_SQL, params)
        return sorted(pk for (pk,) in cursor.fetchall())


def orders_link_email_due(*, now: datetime, batch: int = 200) -> int:
    """E-mail the link to each order placed more than ORDER_LINK_EMAIL_DELAY_SECONDS ago that has
    neither been e-mailed it nor delivered (nor refunded): the buyer who has not paid yet (or whose
    payment is held for review) keeps a way back to it. A buyer who paid in time gets the link in the
    "keys ready" e-mail instead, so a purchase costs the worker no e-mail task at checkout.

    Each order is claimed (`link_emailed_at`) and mailed in a short transaction of its own that commits
    only once its e-mail went out or was handed to a retrying `order_email_task`: a second sweep skips
    the claimed row (SKIP LOCKED), and a worker killed mid-send leaves the claim uncommitted, so the
    next sweep mails the order (at least once: a crash between the send and the commit mails it
    twice). Only that order's row is held during its send. Returns how many were mailed."""
    mailed = 0
    while mailed < batch:
        with transaction.atomic():
            claimed = _orders_link_email_claim(now=now, batch=1)
            if not claimed:
                break
            _order_link_email_send(claimed[0])
        mailed += 1
    if mailed:
        logger.info("escrow.order_links_emailed", extra={"orders": mailed})
    return mailed


def _order_link_email_send(order_pk: int) -> None:
    """Send the link e-mail now; if that fails, queue the retrying task (never raises)."""
    from escrow.tasks import order_email_task

    try:
        order_email(order_pk=order_pk, event="placed")
    except Exception:
        logger.warning("escrow.order_email_failed", extra={"order": order_pk}, exc_info=True)
        try:
            order_email_task.delay(order_pk=order_pk, event="placed")
        except Exception:  # SMTP and the broker both down: the order page and the lookup page lead back
            logger.warning("escrow.order_email_enqueue_failed", extra={"order": order_pk}, exc_info=True)


def order_paid_notify_enqueue(*, order_pk: int) -> None:
    """Queue the notification; never raises (a broker outage must not fail the committed payment)."""
    from escrow.tasks import order_paid_notify_task

    try:
        order_paid_notify_task.delay(order_pk=order_pk)
    except Exception:  # a lost notification is a nuisance, never a lost order
        logger.warning("escrow.order_paid_notify_enqueue_failed", extra={"order": order_pk}, exc_info=True)


def order_delivered_notify(*, order_pk: int) -> None:
    """After a delivery commits, in the delivering process: the buyer's "keys ready" e-mail and the
    merchant's notice. On any error there, each is left to its retrying task. Never raises: the order
    is delivered whatever happens to the messages about it."""
    from escrow.tasks import order_email_task

    try:
        order = _order_for_messages(order_pk)  # read once for both messages
    except Exception:
        logger.warning("escrow.order_delivered_notify_failed", extra={"order": order_pk}, exc_info=True)
        order = None
    try:
        order_email(order_pk=order_pk, event="delivered", order=order)
    except Exception:
        logger.warning("escrow.order_email_failed", extra={"order": order_pk}, exc_info=True)
        try:
            order_email_task.delay(order_pk=order_pk, event="delivered")
        except Exception:  # the page has the keys: a lost e-mail loses nothing
            logger.warning("escrow.order_email_enqueue_failed", extra={"order": order_pk}, exc_info=True)
    try:
        order_paid_notify(order_pk=order_pk, order=order)
    except Exception:
        logger.warning("escrow.order_paid_notify_failed", extra={"order": order_pk}, exc_info=True)
        order_paid_notify_enqueue(order_pk=order_pk)


def _paid_notice_key(order_pk: int) -> str:
    return f"order:{order_pk}:paid"


_ORDER_FIELDS = [field.attname for field in Order._meta.concrete_fields]
# Everything both messages about a delivery need, in one statement (the ORM's select_related of four
# tables cost more CPU to build and read than the rest of the messages): the order, its product's
# title, the merchant's switch and user, and whether the merchant's notice is already in their inbox.
# Table and column names come from the models; every value is a parameter.
_MESSAGES_SQL = f"""
    SELECT {", ".join(f"o.{field.column}" for field in Order._meta.concrete_fields)},
        p.title, m.user_id, m.notify_paid_orders, u.email, u.language,
        EXISTS (SELECT 1 FROM {Notification._meta.db_table} AS n WHERE n.user_id = m.user_id AND n.key = %(key)s)
    FROM {Order._meta.db_table} AS o
    JOIN {Product._meta.db_table} AS p ON p.id = o.product_id
    JOIN {Merchant._meta.db_table} AS m ON m.id = o.merchant_id
    JOIN {User._meta.db_table} AS u ON u.id = m.user_id
    WHERE o.id = %(order)s
"""  # noqa: S608


def _order_for_messages(order_pk: int) -> Order:
    """The order with `product.title`, `merchant.notify_paid_orders`, `merchant.user` (e-mail, language)
    and `merchant_notified` (its paid-order notice is already posted); raises Order.DoesNotExist."""
    if connection.vendor != "postgresql":
        order = (
            Order.objects.select_related("merchant__user", "product")
            .annotate(
                merchant_notified=Exists(
                    Notification.objects.filter(user_id=OuterRef("merchant__user_id"), key=_paid_notice_key(order_pk))
                )
            )
            .get(pk=order_pk)
        )
        return order
    with connection.cursor() as cursor:
        prepared.execute(cursor, _MESSAGES_SQL, {"order": order_pk, "key": _paid_notice_key(order_pk)})
        row = cursor.fetchone()
    if row is None:
        raise Order.DoesNotExist(f"Order {order_pk} does not exist.")
    size = len(_ORDER_FIELDS)
    order = Order.from_db(connection.alias, _ORDER_FIELDS, row[:size])
    title, user_pk, notify_paid_orders, email, language, order.merchant_notified = row[size:]
    order.product = Product.from_db(connection.alias, ["id", "title"], [order.product_id, title])
    merchant = Merchant.from_db(
        connection.alias, ["id", "user_id", "notify_paid_orders"], [order.merchant_id, user_pk, notify_paid_orders]
    )
    order.merchant = merchant
    merchant.user = User.from_db(connection.alias, ["id", "email", "language"], [user_pk, email, language])
    return order


def order_paid_notify(*, order_pk: int, order: Order | None = None) -> bool:
    """E-mail the merchant and post the inbox line, in the merchant's language; False if they switched
    it off or were already told. A mail error propagates (the task retries) and writes no line.

    `order` is `_order_for_messages`'s (the delivering worker read it for both messages); else it is read
    here. Two statements in all: that read, and the line's INSERT (`notification_post`)."""
    order = order if order is not None and order.pk == order_pk else _order_for_messages(order_pk)
    merchant = order.merchant
    user = merchant.user
    key = _paid_notice_key(order.pk)
    if not merchant.notify_paid_orders or order.merchant_notified:
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
    notification_post(
        user_pks=[user.pk], event=EVENT, subject=f"order:{order.pk}", key=key, text=text, url=url, now=timezone.now()
    )
    return True


def _content(order: Order, event: str) -> tuple[str, list[str]]:
    """Subject and paragraphs of one e-mail, in the active language."""
    title = order.product.title
    if event == "placed":
        return _("Your order %(pk)s: %(title)s") % {"pk": order.pk, "title": title}, [
            _("Thank you for your order."),
            _("Your keys appear on this page as soon as the payment is confirmed, and stay there:"),
        ]
    if event == "delivered":
        paragraphs = [_("Your keys for %(title)s are on your order page.") % {"title": title}]
        if order.inspection_ends_at:
            paragraphs.append(
                _(
                    "Check that they work, then confirm receipt. If a key does not work, open a dispute from "
                    "the order page before %(ends)s UTC; after that the merchant is paid."
                )
                % {"ends": order.inspection_ends_at.strftime("%Y-%m-%d %H:%M")}
            )
        return _("Your keys for order %(pk)s are ready") % {"pk": order.pk}, paragraphs
    if event == "refunded":
        refunded = display(sum(refund.amount for refund in order.refunds.all()), order.currency)
        return _("Order %(pk)s: refund of %(amount)s") % {"pk": order.pk, "amount": refunded}, [
            _("%(amount)s of your payment for %(title)s is being returned to how you paid.")
            % {"amount": refunded, "title": title},
            _("Your bank or wallet may take a few days to show it. The order page has the details:"),
        ]
    if event == "lookup":
        return _("The link to your order %(pk)s") % {"pk": order.pk}, [
            _("Someone asked for the link to this order on our order lookup page; we hope it was you."),
            _("It opens your order (%(title)s) for %(days)d days:") % {"title": title, "days": 30},
        ]
    raise ValueError(f"No e-mail for the event {event!r}.")


def order_email(*, order_pk: int, event: str, link: str | None = None, order: Order | None = None) -> None:
    """Send the buyer the e-mail for `event` (one of ORDER_EMAIL_EVENTS), with `X-Shop-Event:
    order.<event>`. `link` is the order's address (the checkout passes the one with its own token);
    without it a fresh signed link is made."""
    order = order if order is not None and order.pk == order_pk else _order_for_messages(order_pk)
    link = link or order_link(order.pk)
    with translation.override(order.language or settings.LANGUAGE_CODE):
        subject, paragraphs = _content(order, event)
        context = {
            "order": order,
            "subject": subject,
            "paragraphs": paragraphs,
            "link": link,
            "amount": display(order.amount, order.currency),
            "private": _("Keep this link private: anyone who has it can see your keys."),
        }
        text = render_to_string("escrow/email/order.txt", context)
        html = render_to_string("escrow/email/order.html", context)
    mail_send(event=f"order.{event}", subject=subject, body=text, html=html, to=[order.email])
