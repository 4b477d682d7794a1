"""The buyer's e-mails about an order, each in the language they checked out in, as plain text and
HTML, each with the link to the order page (escrow/links.py). Sent by `escrow.tasks.order_email_task`
after the commit of what they report; the page stays the truth, so a lost e-mail loses nothing."""

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext as _

from core.mail import mail_send
from core.money import display
from escrow.links import order_link
from escrow.models import Order

ORDER_EMAIL_EVENTS = ("placed", "delivered", "refunded", "lookup")


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


def order_email(*, order_pk: int, event: str, link: str | None = None) -> None:
    """Send the buyer the e-mail for `event` (one of ORDER_EMAIL_EVENTS), with `X-Shop-Event:
    order.<event>`. `link` is the order's address (the checkout passes the one with its own token);
    without it a fresh signed link is made."""
    order = Order.objects.select_related("product", "merchant").get(pk=order_pk)
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
