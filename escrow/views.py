from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from config.transitions import StateError
from escrow import services
from escrow.forms import CheckoutForm
from escrow.selectors import order_for_viewer, orders_of_buyer
from shop.selectors import products_on_sale


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _order_urls(order, token: str | None) -> dict[str, str]:
    from django.urls import reverse

    if token:
        kwargs = {"pk": order.pk, "token": token}
        names = ("order_guest", "order_status_guest", "order_keys_guest", "order_confirm_guest")
    else:
        kwargs = {"pk": order.pk}
        names = ("order", "order_status", "order_keys", "order_confirm")
    return dict(
        zip(("page", "status", "keys", "confirm"), (reverse(f"escrow:{n}", kwargs=kwargs) for n in names), strict=True)
    )


@require_POST
def checkout(request, product_pk: int):
    product = get_object_or_404(products_on_sale(), pk=product_pk)
    form = CheckoutForm(request.POST, max_quantity=product.max_per_order)
    if form.is_valid():
        try:
            placed = services.order_place(
                product_pk=product.pk,
                quantity=form.cleaned_data["quantity"],
                email=form.cleaned_data["email"],
                buyer=request.user,
                now=timezone.now(),
            )
        except services.CheckoutError as error:
            form.add_error(None, str(error))
        else:
            return redirect(placed.pay_url)
    return render(request, "shop/product.html", {"product": product, "form": form}, status=400)


def order_page(request, pk: int, token: str | None = None):
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    keys = None
    if order.has_keys:
        keys = services.order_keys_reveal(
            order=order,
            now=timezone.now(),
            channel="page",
            ip=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            user=request.user,
        )
    return render(request, "escrow/order.html", {"order": order, "keys": keys, "urls": _order_urls(order, token)})


@require_GET
def order_status(request, pk: int, token: str | None = None):
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    return JsonResponse({"status": order.status, "label": order.get_status_display(), "has_keys": order.has_keys})


@require_GET
def order_keys(request, pk: int, token: str | None = None):
    """The keys block of the order page, fetched by the page itself once the order is delivered."""
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    if not order.has_keys:
        return JsonResponse({"detail": _("The keys are not delivered yet."), "code": "not_delivered"}, status=409)
    keys = services.order_keys_reveal(
        order=order,
        now=timezone.now(),
        channel="page",
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        user=request.user,
    )
    return render(request, "escrow/_keys.html", {"order": order, "keys": keys, "urls": _order_urls(order, token)})


@require_POST
def order_confirm(request, pk: int, token: str | None = None):
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    try:
        services.order_confirm_receipt(order=order, now=timezone.now(), actor=request.user)
    except StateError:
        messages.error(request, _("This order cannot be confirmed in its current state."))
    else:
        messages.success(request, _("Thank you! The order is completed and the merchant has been paid."))
    return redirect(_order_urls(order, token)["page"])


@login_required
def my_orders(request):
    return render(request, "escrow/my_orders.html", {"orders": orders_of_buyer(request.user)[:200]})
