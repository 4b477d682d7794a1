"""The pages of reputation and the rules: the buyer's rating form, a merchant's public page, `/rules/`."""

from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from disputes.models import RATING_COMMENT_MAX_LENGTH, Rating
from disputes.reputation import RatingError, latest_ratings, merchant_reputation, rating_create
from escrow.selectors import order_for_viewer
from escrow.services import split_amounts
from shop.models import Merchant, MerchantStatus, Product
from shop.selectors import products_on_sale

# The worked example on the rules page: a 100.00 order split 30 % to the buyer.
EXAMPLE_PAID = 10000
EXAMPLE_BUYER_PERCENT = 30


class RatingForm(forms.Form):
    stars = forms.TypedChoiceField(
        label=gettext_lazy("Stars"),
        choices=[(n, str(n)) for n in range(5, 0, -1)],
        coerce=int,
        widget=forms.RadioSelect,
    )
    comment = forms.CharField(
        label=gettext_lazy("Comment (optional)"),
        required=False,
        max_length=RATING_COMMENT_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
    )


def _order_page(order, token: str | None) -> str:
    if token:
        return reverse("escrow:order_guest", kwargs={"pk": order.pk, "token": token})
    return reverse("escrow:order", kwargs={"pk": order.pk})


def rating_page(request, pk: int, token: str | None = None):
    """The buyer of a completed order rates its merchant once (by the order's token, or signed in)."""
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    existing = Rating.objects.filter(order=order).first()
    form = RatingForm(request.POST or None)
    status = 200
    if request.method == "POST" and existing is None:
        if form.is_valid():
            try:
                rating_create(
                    order=order,
                    stars=form.cleaned_data["stars"],
                    comment=form.cleaned_data["comment"],
                    now=timezone.now(),
                )
            except RatingError as refused:
                form.add_error(RatingError.code_fields.get(refused.code), str(refused))
                status = refused.status
            else:
                messages.success(request, _("Thank you for rating this merchant."))
                return redirect(_order_page(order, token))
        else:
            status = 400
    elif request.method == "POST":
        status = 409
    context = {"order": order, "form": form, "existing": existing, "order_url": _order_page(order, token)}
    return render(request, "disputes/rate.html", context, status=status)


def merchant_page(request, pk: int):
    """A merchant's public page: their figures, products on sale and latest ratings. Approved merchants only."""
    merchant = get_object_or_404(Merchant.objects.select_related("kyc"), pk=pk, status=MerchantStatus.APPROVED)
    context = {
        "merchant": merchant,
        "reputation": merchant_reputation(merchant.pk, timezone.now()),
        "products": products_on_sale().filter(merchant=merchant),
        "ratings": latest_ratings(merchant.pk),
    }
    return render(request, "disputes/merchant_public.html", context)


def rules_page(request):
    """The dispute rules, every number read from the settings the timers use."""
    fee_percent = Decimal(settings.PLATFORM_FEE_PERCENT)
    refund, share, fee = split_amounts(paid=EXAMPLE_PAID, buyer_percent=EXAMPLE_BUYER_PERCENT, fee_percent=fee_percent)
    context = {
        "merchant_hours": settings.DISPUTE_MERCHANT_HOURS,
        "buyer_hours": settings.DISPUTE_BUYER_HOURS,
        "arbitration_hours": settings.DISPUTE_ARBITRATION_HOURS,
        "inspection_hours": Product._meta.get_field("inspection_hours").get_default(),
        "fee_percent": fee_percent,
        "example": {
            "paid": EXAMPLE_PAID,
            "buyer_percent": EXAMPLE_BUYER_PERCENT,
            "refund": refund,
            "merchant_part": EXAMPLE_PAID - refund,
            "share": share,
            "fee": fee,
            "currency": "CNY",
        },
    }
    return render(request, "disputes/rules.html", context)
