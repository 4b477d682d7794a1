from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from escrow.models import Order, token_hash


def order_for_viewer(*, pk: int, token: str | None, user: User | None) -> Order:
    """The order, if this viewer owns it: by its access token, or as its signed-in buyer.

    Anything else raises Http404, so a guessed id and a wrong token look the same as a missing order.
    """
    orders = Order.objects.select_related("product", "merchant")
    if token:
        order = orders.filter(pk=pk, access_token_hash=token_hash(token)).first()
    elif user is not None and user.is_authenticated:
        order = orders.filter(pk=pk, buyer=user).first()
    else:
        order = None
    if order is None:
        raise Http404
    return order


def orders_of_buyer(user: User) -> QuerySet[Order]:
    return Order.objects.filter(buyer=user).select_related("product", "merchant").order_by("-pk")
