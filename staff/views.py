"""The staff console: the queues at a glance, one page per queue, and the few actions that have no
page of their own (each one call to the owning app's service). Every page needs a staff session that
passed a second factor."""

from django import forms
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from accounts.models import Alert
from accounts.services import alert_acknowledge
from accounts.two_factor import verified_required
from core.errors import Refused
from core.transitions import StateError
from escrow import withdrawals
from escrow.models import Withdrawal
from shop import services as shop_services
from shop.models import Merchant, MerchantKyc, Product
from staff.selectors import BY_SLUG, queue_summary

PER_PAGE = 50


class QueueFilterForm(forms.Form):
    q = forms.CharField(label=gettext_lazy("Search"), required=False, max_length=100)


class ReasonForm(forms.Form):
    reason = forms.CharField(label=gettext_lazy("Reason (the merchant reads it)"), max_length=500)


def staff_page(view):
    return staff_member_required(verified_required(view))


@staff_page
def console(request):
    return render(request, "staff/console.html", {"summary": queue_summary(now=timezone.now())})


@staff_page
def queue_page(request, slug: str):
    queue = BY_SLUG.get(slug)
    if queue is None:
        raise Http404
    form = QueueFilterForm(request.GET or None)
    q = form.cleaned_data["q"].strip() if form.is_bound and form.is_valid() else ""
    now = timezone.now()
    page = Paginator(queue.rows(q=q, now=now), PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        f"staff/queue_{slug.replace('-', '_')}.html",
        {"queue": queue, "form": form, "page": page, "now": now, "reason_form": ReasonForm(), "q": q},
    )


@staff_page
@require_POST
def merchant_approve(request, pk: int):
    merchant = get_object_or_404(Merchant, pk=pk)
    try:
        shop_services.merchant_approve(merchant=merchant, actor=request.user, now=timezone.now())
    except (Refused, StateError):
        messages.error(request, _("%(name)s is no longer waiting for approval.") % {"name": merchant.name})
    else:
        messages.success(request, _("%(name)s is approved.") % {"name": merchant.name})
    return redirect("staff:queue", slug="merchants")


@staff_page
@require_POST
def merchant_reject(request, pk: int):
    merchant = get_object_or_404(Merchant, pk=pk)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Give the merchant a reason for the rejection."))
        return redirect("staff:queue", slug="merchants")
    try:
        shop_services.merchant_reject(
            merchant=merchant, reason=form.cleaned_data["reason"], actor=request.user, now=timezone.now()
        )
    except (Refused, StateError):
        messages.error(request, _("%(name)s is no longer waiting for approval.") % {"name": merchant.name})
    else:
        messages.success(request, _("%(name)s is rejected.") % {"name": merchant.name})
    return redirect("staff:queue", slug="merchants")


@staff_page
def kyc_document(request, pk: int):
    """A pending or decided merchant's KYC document, to staff with a verified second factor only (the
    decorators send anyone else to sign in, never the file), as a download the browser must not sniff
    or cache. No document on file, or deleted: 404. Each reading is an audit line."""
    kyc = get_object_or_404(MerchantKyc, merchant_id=pk)
    try:
        data = shop_services.merchant_kyc_document_read(kyc=kyc, actor=request.user, now=timezone.now())
    except shop_services.ShopError:
        raise Http404 from None
    response = HttpResponse(data, content_type=kyc.document_content_type)
    extension = kyc.document_name.rsplit(".", 1)[-1]
    response["Content-Disposition"] = f'attachment; filename="merchant-{pk}-kyc.{extension}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


@staff_page
@require_POST
def product_approve(request, pk: int):
    product = get_object_or_404(Product, pk=pk)
    try:
        shop_services.product_approve(product=product, actor=request.user, now=timezone.now())
    except (Refused, StateError):
        messages.error(request, _("%(title)s is no longer awaiting review.") % {"title": product.title})
    else:
        messages.success(request, _("%(title)s is approved and listed.") % {"title": product.title})
    return redirect("staff:queue", slug="products")


@staff_page
@require_POST
def product_reject(request, pk: int):
    product = get_object_or_404(Product, pk=pk)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Give the merchant a reason for the rejection."))
        return redirect("staff:queue", slug="products")
    try:
        shop_services.product_reject(
            product=product, reason=form.cleaned_data["reason"], actor=request.user, now=timezone.now()
        )
    except (Refused, StateError):
        messages.error(request, _("%(title)s is no longer awaiting review.") % {"title": product.title})
    else:
        messages.success(request, _("%(title)s is rejected.") % {"title": product.title})
    return redirect("staff:queue", slug="products")


@staff_page
@require_POST
def withdrawal_reject(request, pk: int):
    withdrawal = get_object_or_404(Withdrawal, pk=pk)
    note = request.POST.get("note", "")[:200]
    try:
        withdrawals.withdrawal_reject(withdrawal_pk=withdrawal.pk, staff=request.user, now=timezone.now(), note=note)
    except (Refused, StateError):
        messages.error(request, _("This withdrawal was already decided."))
    else:
        messages.success(
            request, _("Withdrawal %(pk)s is rejected; the money is back in the merchant's balance.") % {"pk": pk}
        )
    return redirect("staff:queue", slug="withdrawals")


@staff_page
@require_POST
def alert_ack(request, pk: int):
    alert = get_object_or_404(Alert, pk=pk)
    if alert_acknowledge(alert=alert, actor=request.user, now=timezone.now()):
        messages.success(request, _("Alert acknowledged."))
    else:
        messages.info(request, _("This alert was already acknowledged."))
    return redirect("staff:queue", slug="alerts")
