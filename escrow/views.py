from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from core.client_ip import client_ip
from core.ratelimit import RateLimited, rate_limit_check
from core.transitions import StateError
from escrow import services
from escrow.forms import CheckoutForm
from escrow.key_reveal import keys_reveal_for_request
from escrow.selectors import order_for_viewer, orders_of_buyer
from shop.pricing import tiers_display
from shop.selectors import products_on_sale


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


def _product_context(product, form) -> dict:
    return {"product": product, "form": form, "tiers": tiers_display(product)}


def product_page(request, pk: int):
    """A product on sale and its checkout form, which posts to `checkout` below. `?quantity=` and
    `?coupon=` fill the form in (the order page's "order again" link uses them)."""
    product = get_object_or_404(products_on_sale(), pk=pk)
    most = services.order_max_quantity(product)
    try:
        quantity = min(max(int(request.GET.get("quantity", 1)), 1), most)
    except ValueError:
        quantity = 1
    initial = {"quantity": quantity, "coupon": request.GET.get("coupon", "")[:32]}
    if request.user.is_authenticated and request.user.email:
        initial["email"] = request.user.email
    form = CheckoutForm(initial=initial, max_quantity=most)
    return render(request, "escrow/product.html", _product_context(product, form))


@require_POST
def checkout(request, product_pk: int):
    product = get_object_or_404(products_on_sale(), pk=product_pk)
    form = CheckoutForm(request.POST, max_quantity=services.order_max_quantity(product))
    try:
        # The same budget as POST /api/v1/orders/: every attempt counts, valid or not.
        rate_limit_check(scope="checkout", identity=client_ip(request))
    except RateLimited as limited:
        form.is_valid()  # keep what the buyer typed, with its own errors
        form.add_error(None, _("Too many checkouts from your address. Please try again in a minute."))
        response = render(request, "escrow/product.html", _product_context(product, form), status=429)
        response["Retry-After"] = str(limited.retry_after)
        return response
    if form.is_valid():
        try:
            placed = services.order_place(
                product_pk=product.pk,
                quantity=form.cleaned_data["quantity"],
                email=form.cleaned_data["email"],
                buyer=request.user,
                now=timezone.now(),
                ip=client_ip(request) or None,
                coupon_code=form.cleaned_data["coupon"],
                language=translation.get_language() or "",
            )
        except services.CheckoutError as error:
            form.add_error("coupon" if error.code.startswith("coupon_") else None, str(error))
        else:
            return redirect(placed.pay_url)
    return render(request, "escrow/product.html", _product_context(product, form), status=400)


def _too_many_reveals(limited: RateLimited) -> str:
    return _("Too many views of these keys in a short time. Please try again in %(seconds)d seconds.") % {
        "seconds": limited.retry_after
    }


@never_cache  # the page shows the keys: no browser or proxy may keep a copy
def order_page(request, pk: int, token: str | None = None):
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    keys, limited = None, None
    if order.has_keys:
        try:
            keys = keys_reveal_for_request(request, order, channel="page")
        except RateLimited as error:
            limited = error
    context = {"order": order, "keys": keys, "urls": _order_urls(order, token)}
    if limited is None:
        return render(request, "escrow/order.html", context)
    response = render(request, "escrow/order.html", {**context, "limited": _too_many_reveals(limited)}, status=429)
    response["Retry-After"] = str(limited.retry_after)
    return response


@require_GET
def order_status(request, pk: int, token: str | None = None):
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    return JsonResponse({"status": order.status, "label": order.get_status_display(), "has_keys": order.has_keys})


@require_GET
@never_cache
def order_keys(request, pk: int, token: str | None = None):
    """The keys block of the order page, fetched by the page itself once the order is delivered."""
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    if not order.has_keys:
        return JsonResponse({"detail": _("The keys are not delivered yet."), "code": "not_delivered"}, status=409)
    try:
        keys = keys_reveal_for_request(request, order, channel="page")
    except RateLimited as limited:
        response = JsonResponse({"detail": _too_many_reveals(limited), "code": "throttled"}, status=429)
        response["Retry-After"] = str(limited.retry_after)
        return response
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
