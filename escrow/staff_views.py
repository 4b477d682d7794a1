"""Staff pages that need more than an admin action: a partial refund chooses keys, a held order is
reviewed, a withdrawal is paid out only after staff confirm its full details and the payout reference."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _

import risk
from accounts.two_factor import verified_required
from core.transitions import StateError
from escrow import refunds, reviews, withdrawals
from escrow.forms import OrderReviewForm, RefundPaidByHandForm, WithdrawalApproveForm
from escrow.gateways import GATEWAYS, gateways_status
from escrow.merchant_views import refund_page
from escrow.models import Order, PaymentStatus, Refund, RefundStatus, Withdrawal


@staff_member_required
@verified_required
def staff_refund(request, pk: int):
    order = get_object_or_404(Order.objects.select_related("product"), pk=pk)
    return refund_page(request, order, back=request.path)


@staff_member_required
@verified_required
def staff_order_review(request, pk: int):
    """A held order: what was expected and what arrived, then approve (deliver) or reject (refund)."""
    order = get_object_or_404(Order.objects.select_related("product", "merchant"), pk=pk)
    payment = order.payments.filter(status=PaymentStatus.MISMATCHED).first()
    form = OrderReviewForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            if form.cleaned_data["decision"] == "approve":
                reviews.order_review_approve(order_pk=order.pk, staff=request.user, now=timezone.now())
                messages.success(request, _("The order is approved and being delivered."))
            else:
                reviews.order_review_reject(
                    order_pk=order.pk, staff=request.user, now=timezone.now(), note=form.cleaned_data["note"]
                )
                messages.success(request, _("The order is rejected; what was paid goes back to the buyer."))
        except reviews.ReviewRefused as error:
            form.add_error(None, str(error))
        else:
            # Decided here rather than from risk's review queue: its item for the order goes with it.
            risk.review_settled_elsewhere(
                kind="order",
                subject_id=order.pk,
                approve=form.cleaned_data["decision"] == "approve",
                staff=request.user,
                now=timezone.now(),
                note=form.cleaned_data.get("note", ""),
            )
            # Back to the staff console's queue, where the next held order waits (by URL name: escrow
            # does not import the console).
            return redirect("staff:queue", slug="held-orders")
    return render(
        request,
        "escrow/staff/order_review.html",
        {"order": order, "payment": payment, "form": form},
        status=400 if form.errors else 200,
    )


@staff_member_required
@verified_required
def staff_withdrawal_approve(request, pk: int):
    """Pay a withdrawal out: the full payout details (the unmasked account number, for staff only),
    then the payout reference of the transfer staff made and an explicit confirmation."""
    withdrawal = get_object_or_404(Withdrawal.objects.select_related("merchant", "payout_account"), pk=pk)
    form = WithdrawalApproveForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            withdrawals.withdrawal_approve(
                withdrawal_pk=withdrawal.pk,
                staff=request.user,
                payout_reference=form.cleaned_data["payout_reference"],
                now=timezone.now(),
            )
        except withdrawals.WithdrawalRefused as error:
            form.add_error("payout_reference", str(error))
        except StateError:
            form.add_error(None, _("This withdrawal was already decided."))
        else:
            messages.success(request, _("Withdrawal %(pk)s is marked paid.") % {"pk": withdrawal.pk})
            return redirect("staff:queue", slug="withdrawals")
    account = withdrawal.payout_account
    return render(
        request,
        "escrow/staff/withdrawal_approve.html",
        {
            "withdrawal": withdrawal,
            "account": account,
            "account_number": account.number_plaintext(),
            "form": form,
        },
        status=400 if form.errors else 200,
    )


@staff_member_required
@verified_required
def staff_payments(request):
    """The payment gateways (configured / not configured here) and every refund still owed to a buyer,
    with those no gateway will pay (epay has no refund API, or the provider declined) to be paid by hand."""
    form = RefundPaidByHandForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            refunds.refund_paid_by_hand(
                refund_pk=form.cleaned_data["refund"],
                staff=request.user,
                reference=form.cleaned_data["reference"],
                now=timezone.now(),
            )
        except refunds.RefundRefused as error:
            messages.error(request, str(error))
        except Refund.DoesNotExist:
            messages.error(request, _("No such refund."))
        else:
            messages.success(request, _("The refund is recorded as paid."))
            return redirect("escrow:staff_payments")
    owed = Refund.objects.filter(status=RefundStatus.REQUESTED).select_related("order").order_by("created_at")[:500]
    by_hand = {name for name, gateway in GATEWAYS.items() if getattr(gateway, "refunds_by_hand", False)}
    return render(
        request,
        "escrow/staff/payments.html",
        {"gateways": gateways_status(), "refunds": owed, "by_hand": by_hand, "form": form},
        status=400 if form.errors else 200,
    )
