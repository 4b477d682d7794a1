"""Links that open one order without an account.

The order's own access token is created at checkout and only its hash is kept, so the shop cannot
write it into a later e-mail. A later e-mail (delivered, refunded, dispute updates, the order lookup)
carries a fresh *signed* token instead: the order's id signed with the project's SECRET_KEY
(`django.core.signing`, salted for this use), accepted on the same `/orders/<pk>/t/<token>/` pages for
ORDER_LINK_MAX_AGE. Nothing is stored, so nothing can leak from the database; a signature cannot be
made without the secret, and one for another order does not open this one.
"""

from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse

ORDER_LINK_SALT = "escrow.order-link"
ORDER_LINK_MAX_AGE = timedelta(days=30)


def order_link_token(order_pk: int) -> str:
    return signing.dumps(order_pk, salt=ORDER_LINK_SALT)


def order_link_token_opens(token: str, order_pk: int) -> bool:
    """Whether `token` is a signed link token for this very order, within its age."""
    try:
        return signing.loads(token, salt=ORDER_LINK_SALT, max_age=ORDER_LINK_MAX_AGE) == order_pk
    except signing.BadSignature:  # SignatureExpired included
        return False


def order_link(order_pk: int, *, token: str | None = None) -> str:
    """The order page's absolute address for its buyer: with `token` (the checkout's own), or a fresh
    signed one."""
    path = reverse("escrow:order_guest", kwargs={"pk": order_pk, "token": token or order_link_token(order_pk)})
    return settings.SHOP_BASE_URL.rstrip("/") + path
