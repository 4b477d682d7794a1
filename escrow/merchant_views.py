"""The merchant's money pages: balance and statement (CSV), withdrawals, refunds, liability proofs."""

import csv
import json

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

import risk
from core.money import to_major
from escrow import liabilities, refunds, withdrawals
from escrow.forms import PayoutAccountForm, RefundForm, StatementFilterForm, WithdrawalForm
from escrow.models import KeyDisposition, LiabilityLeaf, LiabilityPublication, Order, Withdrawal
from escrow.selectors import merchant_balances, merchant_statement, statement_line
from shop.models import CardKey, CardKeyStatus
from shop.permissions import merchant_required

STATEMENT_PAGE_LINES = 500


def _latest_proofs(merchant) -> list[LiabilityLeaf]:
    leaves = []
    for currency in LiabilityPublication.objects.values_list("currency", flat=True).distinct():
        publication = LiabilityPublication.objects.filter(currency=currency).first()
        leaf = publication.leaves.filter(merchant=merchant).first() if publication else None
        if leaf:
            leaves.append(leaf)
    return leaves


@merchant_required
def balance(request):
    merchant = request.merchant
    form = StatementFilterForm(request.GET or None)
    since = until = None
    if form.is_bound and form.is_valid():
        since, until = form.cleaned_data["since"], form.cleaned_data["until"]
    transfers, own = merchant_statement(merchant, since=since, until=until)
    if request.GET.get("format") == "csv":
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="statement.csv"'
        writer = csv.writer(response)
        writer.writerow(["at", "transfer_id", "kind", "code", "account", "direction", "amount", "currency", "order"])
        for transfer in transfers.iterator(chunk_size=2000):
            line = statement_line(transfer, own)
            writer.writerow(
                [
                    line["at"].isoformat(),
                    line["transfer_id"],
                    line["kind"],
                    line["code"],
                    line["account"],
                    line["direction"],
                    to_major(line["amount"], line["currency"]),
                    line["currency"],
                    line["order"] or "",
                ]
            )
        return response
    lines = [statement_line(t, own) for t in transfers[:STATEMENT_PAGE_LINES]]
    return render(
        request,
        "escrow/merchant/balance.html",
        {
            "balances": merchant_balances(merchant),
            "lines": lines,
            "form": form,
            "proofs": _latest_proofs(merchant),
            "page_limit": STATEMENT_PAGE_LINES,
        },
    )


@merchant_required
def proof_download(request, pk: int):
    """The merchant's own inclusion proof in one publication (someone else's answers 404)."""
    leaf = get_object_or_404(LiabilityLeaf.objects.select_related("publication"), pk=pk, merchant=request.merchant)
    response = HttpResponse(json.dumps(liabilities.proof_for(leaf=leaf), indent=2), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="liability-proof-{leaf.publication_id}.json"'
    return response


@merchant_required
def withdrawal_list(request):
    merchant = request.merchant
    form = WithdrawalForm(request.POST or None, merchant=merchant, prefix="w")
    if request.method == "POST" and form.is_valid():
        try:
            withdrawals.withdrawal_request(
                merchant=merchant,
                user=request.user,
                payout_account_pk=form.cleaned_data["payout_account"].pk,
                amount=form.amount_minor(),
                currency=form.cleaned_data["currency"],
                code=form.cleaned_data["code"],
                now=timezone.now(),
                risk_context=risk.context_from_request(request),
            )
        except (withdrawals.WithdrawalRefused, risk.RiskRefused) as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, _("Your withdrawal is requested; staff will review it."))
            return redirect("merchant_money:withdrawals")
    return render(
        request,
        "escrow/merchant/withdrawals.html",
        {
            "form": form,
            "account_form": PayoutAccountForm(prefix="a"),
            "balances": merchant_balances(merchant),
            "withdrawals": Withdrawal.objects.filter(merchant=merchant).select_related("payout_account")[:200],
            "accounts": merchant.payout_accounts.order_by("pk"),
        },
        status=400 if form.errors else 200,
    )


@merchant_required
@require_POST
def payout_account_add(request):
    form = PayoutAccountForm(request.POST, prefix="a")
    if form.is_valid():
        try:
            withdrawals.payout_account_add(
                merchant=request.merchant,
                actor=request.user,
                now=timezone.now(),
                risk_context=risk.context_from_request(request),
                **form.cleaned_data,
            )
        except (withdrawals.WithdrawalRefused, risk.RiskRefused) as error:
            messages.error(request, str(error))
        else:
            messages.success(request, _("Payout account saved."))
    else:
        messages.error(request, _("Fill in every field of the payout account, and a fresh code from your app."))
    return redirect("merchant_money:withdrawals")


def refund_page(request, order: Order, *, merchant=None, back: str):
    """One page for staff and merchants: refund the whole order or some of its delivered keys.

    Before anyone confirms, it lists the keys that will be revoked even with "return to stock" (and
    why). Staff must give a reason.
    """
    key_pks = list(
        CardKey.objects.filter(order=order, status__in=[CardKeyStatus.SOLD, CardKeyStatus.RESERVED])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    _restock, revoked = refunds.refund_keys_plan(order=order, key_pks=key_pks, disposition=KeyDisposition.RESTOCK)
    always_revoked = [(pk, refunds.revoke_reason_text(why)) for pk, why in revoked.items()]
    form = RefundForm(request.POST or None, key_pks=key_pks, note_required=merchant is None)
    if request.method == "POST" and form.is_valid():
        chosen = [int(pk) for pk in form.cleaned_data["keys"]] or None
        try:
            refund = refunds.order_refund(
                order_pk=order.pk,
                now=timezone.now(),
                key_pks=chosen,
                disposition=form.cleaned_data["disposition"],
                reason="merchant" if merchant else "staff",
                note=form.cleaned_data["note"],
                actor=request.user,
                merchant=merchant,
            )
        except refunds.RefundRefused as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, _("The refund is booked and sent to the payment gateway."))
            if refund.revoked_keys:
                messages.info(
                    request,
                    _("Revoked keys: %(keys)s.")
                    % {
                        "keys": ", ".join(
                            f"#{pk} ({refunds.revoke_reason_text(why)})" for pk, why in refund.revoked_keys.items()
                        )
                    },
                )
            return redirect(back)
    context = {"order": order, "form": form, "back": back, "always_revoked": always_revoked}
    return render(request, "escrow/refund.html", context, status=400 if form.errors else 200)


@merchant_required
def merchant_refund(request, pk: int):
    order = Order.objects.filter(pk=pk, merchant=request.merchant).select_related("product").first()
    if order is None:
        raise Http404
    return refund_page(request, order, merchant=request.merchant, back=request.path)
