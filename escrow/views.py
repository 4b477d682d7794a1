from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

import risk
from accounts.services import TwoFactorInvalid, TwoFactorRequired, otp_fresh_code_check, totp_device_confirmed
from core.client_ip import client_ip
from core.ratelimit import RateLimited, rate_limit_check
from core.transitions import StateError
from escrow import services
from escrow.forms import CaptchaChallengeForm, CheckoutForm, CodeChallengeForm, OrderLookupForm
from escrow.gateways import gateways_for_currency
from escrow.key_reveal import keys_reveal_for_request
from escrow.models import OrderStatus
from escrow.selectors import order_for_viewer, order_pay_link, order_timeline, orders_of_buyer
from shop.pricing import tiers_display
from shop.selectors import products_on_sale


def _order_urls(order, token: str | None) -> dict[str, str]:
    if token:
        kwargs = {"pk": order.pk, "token": token}
        names = (
            "order_guest",
            "order_status_guest",
            "order_keys_guest",
            "order_confirm_guest",
            "order_pay_again_guest",
        )
    else:
        kwargs = {"pk": order.pk}
        names = ("order", "order_status", "order_keys", "order_confirm", "order_pay_again")
    return dict(
        zip(
            ("page", "status", "keys", "confirm", "pay_again"),
            (reverse(f"escrow:{n}", kwargs=kwargs) for n in names),
            strict=True,
        )
    )


def _next_step(order, urls: dict[str, str]) -> dict:
    """What the buyer can do now, so no page is a dead end: pay (with the time left), pay again after a
    failed payment while the window is open, or order afresh once it has passed."""
    now = timezone.now()
    if order.status == OrderStatus.AWAITING_PAYMENT and order.expires_at > now:
        return {"kind": "pay", "pay_url": order_pay_link(order, return_url=urls["page"]), "ends": order.expires_at}
    if order.status == OrderStatus.CANCELLED and order.paid_at is None and order.expires_at > now:
        return {"kind": "pay_again", "ends": order.expires_at}
    if order.status in {OrderStatus.AWAITING_PAYMENT, OrderStatus.EXPIRED, OrderStatus.CANCELLED}:
        reorder = reverse("escrow:product", kwargs={"pk": order.product_id})
        query = {"quantity": order.quantity, **({"coupon": order.coupon.code} if order.coupon_id else {})}
        return {"kind": "reorder", "url": f"{reorder}?{urlencode(query)}"}
    if order.status == OrderStatus.DELIVERED and order.inspection_ends_at:
        return {"kind": "inspect", "ends": order.inspection_ends_at}
    return {"kind": ""}


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
    form = CheckoutForm(initial=initial, max_quantity=most, gateways=_gateways(product))
    return render(request, "escrow/product.html", _product_context(product, form))


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
        response = render(request, "escrow/product.html", _product_context(product, form), status=429)
        response["Retry-After"] = str(limited.retry_after)
        return response
    challenge, challenge_passed = _challenge_answer(request)
    context = _product_context(product, form)
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
                coupon_code=form.cleaned_data["coupon"],
                language=translation.get_language() or "",
            )
        except risk.RiskRefused as refusal:
            if refusal.code == "challenge_required":
                # A wrong answer keeps its error; a first challenge starts with an empty form.
                context["challenge"] = challenge if challenge is not None else _challenge_form(request)
            form.add_error(None, str(refusal))
            return render(request, "escrow/product.html", context, status=403)
        except services.CheckoutError as error:
            form.add_error("coupon" if error.code.startswith("coupon_") else None, str(error))
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
    urls = _order_urls(order, token)
    context = {
        "order": order,
        "keys": keys,
        "urls": urls,
        "timeline": order_timeline(order),
        "next": _next_step(order, urls),
    }
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


@require_POST
def order_pay_again(request, pk: int, token: str | None = None):
    """A new payment for an order whose payment failed, while its window is open (else: order again)."""
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    urls = _order_urls(order, token)
    try:
        placed = services.order_pay_again(order_pk=order.pk, now=timezone.now(), return_url=urls["page"])
    except services.CheckoutError as error:
        messages.error(request, str(error))
        return redirect(urls["page"])
    return redirect(placed.pay_url)


def order_lookup(request):
    """E-mail + order number → the order's link, e-mailed to that address and never shown here. The
    page says the same whether or not there is such an order; both the client address and the e-mail
    address are rate-limited."""
    form = OrderLookupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        try:
            rate_limit_check(scope="order_lookup", identity=client_ip(request))
            rate_limit_check(scope="order_lookup_email", identity=email.strip().lower())
        except RateLimited as limited:
            form.add_error(None, _("Too many lookups. Please try again in a few minutes."))
            response = render(request, "escrow/order_lookup.html", {"form": form}, status=429)
            response["Retry-After"] = str(limited.retry_after)
            return response
        services.order_lookup_request(email=email, order_number=form.cleaned_data["order_number"], now=timezone.now())
        return render(request, "escrow/order_lookup.html", {"form": OrderLookupForm(), "sent_to": email})
    return render(request, "escrow/order_lookup.html", {"form": form}, status=400 if form.errors else 200)


@login_required
def my_orders(request):
    return render(request, "escrow/my_orders.html", {"orders": orders_of_buyer(request.user)[:200]})
