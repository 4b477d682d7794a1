from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

import risk
from accounts.services import TwoFactorInvalid, TwoFactorRequired, otp_fresh_code_check, totp_device_confirmed
from core.client_ip import client_ip
from core.ratelimit import RateLimited, rate_limit_check
from core.transitions import StateError
from escrow import services
from escrow.forms import CaptchaChallengeForm, CheckoutForm, CodeChallengeForm
from escrow.gateways import gateways_for_currency
from escrow.key_reveal import keys_reveal_for_request
from escrow.selectors import order_for_viewer, orders_of_buyer
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


def product_page(request, pk: int):
    """A product on sale and its checkout form, which posts to `checkout` below."""
    product = get_object_or_404(products_on_sale(), pk=pk)
    initial = {"quantity": 1}
    if request.user.is_authenticated and request.user.email:
        initial["email"] = request.user.email
    form = CheckoutForm(initial=initial, max_quantity=services.order_max_quantity(product), gateways=_gateways(product))
    return render(request, "escrow/product.html", {"product": product, "form": form})


def _gateways(product) -> list[str]:
    """The gateways a buyer of `product` may choose among (they take its currency), default first."""
    return gateways_for_currency(product.currency)


@require_POST
def checkout(request, product_pk: int):
    product = get_object_or_404(products_on_sale(), pk=product_pk)
    form = CheckoutForm(request.POST, max_quantity=services.order_max_quantity(product), gateways=_gateways(product))
    try:
        # The same budget as POST /api/v1/orders/: every attempt counts, valid or not.
        rate_limit_check(scope="checkout", identity=client_ip(request))
    except RateLimited as limited:
        form.is_valid()  # keep what the buyer typed, with its own errors
        form.add_error(None, _("Too many checkouts from your address. Please try again in a minute."))
        response = render(request, "escrow/product.html", {"product": product, "form": form}, status=429)
        response["Retry-After"] = str(limited.retry_after)
        return response
    challenge, challenge_passed = _challenge_answer(request)
    context = {"product": product, "form": form}
    if form.is_valid():
        email = form.cleaned_data["email"]
        try:
            placed = services.order_place_assessed(
                risk_context=risk.context_from_request(request, email=email),
                challenge_passed=challenge_passed,
                product_pk=product.pk,
                quantity=form.cleaned_data["quantity"],
                email=email,
                buyer=request.user,
                now=timezone.now(),
                ip=client_ip(request) or None,
                gateway_name=form.cleaned_data.get("gateway") or None,
            )
        except risk.RiskRefused as refusal:
            if refusal.code == "challenge_required":
                # A wrong answer keeps its error; a first challenge starts with an empty form.
                context["challenge"] = challenge if challenge is not None else _challenge_form(request)
            form.add_error(None, str(refusal))
            return render(request, "escrow/product.html", context, status=403)
        except services.CheckoutError as error:
            form.add_error(None, str(error))
        else:
            return redirect(placed.pay_url)
    return render(request, "escrow/product.html", context, status=400)


def _challenge_form(request, data=None):
    """A code from their app for a signed-in user with a second factor, a captcha for anyone else."""
    user = request.user
    if user.is_authenticated and totp_device_confirmed(user) is not None:
        return CodeChallengeForm(data)
    return CaptchaChallengeForm(data)


def _challenge_answer(request):
    """The challenge form the buyer answered with this checkout (None if none), and whether it passed."""
    if not any(name.startswith("challenge-") for name in request.POST):
        return None, False
    challenge = _challenge_form(request, request.POST)
    if not challenge.is_valid():
        return challenge, False
    if isinstance(challenge, CodeChallengeForm):
        try:
            otp_fresh_code_check(user=request.user, code=challenge.cleaned_data["code"])
        except (TwoFactorInvalid, TwoFactorRequired):
            challenge.add_error("code", _("That code is wrong or was already used. Enter a fresh code from your app."))
            return challenge, False
    return challenge, True


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
