"""The merchant's money pages: balance and statement (CSV), withdrawals, refunds, liability proofs."""

import csv
import json

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

import risk
from core.money import to_major
from escrow import liabilities, refunds, withdrawals
from escrow.forms import (
    MerchantOrderFilterForm,
    PayoutAccountForm,
    RefundForm,
    StatementFilterForm,
    WithdrawalForm,
)
from escrow.models import KeyDisposition, LiabilityLeaf, LiabilityPublication, Order, RefundStatus, Withdrawal
from escrow.selectors import (
    merchant_balances,
    merchant_order,
    merchant_orders,
    merchant_statement,
    order_dispute,
    statement_fees,
    statement_line,
)
from shop.models import CardKey, CardKeyStatus
from shop.permissions import merchant_required

STATEMENT_PAGE_LINES = 500
ORDERS_PER_PAGE = 50


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
        writer.writerow(
            ["at", "transfer_id", "kind", "code", "account", "direction", "amount", "currency", "order", "description"]
        )
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
                    line["description"],
                ]
            )
        return response
    page = list(transfers[:STATEMENT_PAGE_LINES])
    fees = statement_fees(page)
    lines = [statement_line(t, own, fees) for t in page]
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
    # After the refund the merchant lands back on the order's page, which links this one.
    return refund_page(
        request, order, merchant=request.merchant, back=reverse("merchant_orders:detail", kwargs={"pk": order.pk})
    )


@merchant_required
def order_list(request):
    """The merchant's orders: filter by status, product and date, search by order number or e-mail."""
    from django.core.paginator import Paginator

    merchant = request.merchant
    form = MerchantOrderFilterForm(request.GET or None, products=merchant.products.order_by("title"))
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    orders = merchant_orders(
        merchant,
        q=filters.get("q") or "",
        status=filters.get("status") or "",
        product=filters.get("product"),
        since=filters.get("since"),
        until=filters.get("until"),
    )
    page = Paginator(orders, ORDERS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "escrow/merchant/orders.html",
        {"form": form, "page": page, "query": query.urlencode()},
        status=400 if form.errors else 200,
    )


@merchant_required
def order_detail(request, pk: int):
    """One order of the merchant's: items, payment, delivery, every reveal, refunds, the dispute, and
    the refund page while a refund is possible. Someone else's order answers 404."""
    order = merchant_order(request.merchant, pk)
    keys = CardKey.objects.filter(order=order).order_by("pk").values("pk", "status")
    return render(
        request,
        "escrow/merchant/order.html",
        {
            "order": order,
            "keys": [{"pk": key["pk"], "status": CardKeyStatus(key["status"]).label} for key in keys],
            "payments": order.payments.all(),
            "reveals": order.reveals.all(),
            "refunds": order.refunds.all(),
            "refund_paid": RefundStatus.SUCCEEDED,
            "dispute": order_dispute(order),
            "can_refund": order.status in refunds.REFUNDABLE,
        },
    )


@merchant_required
def dashboard(request):
    """At a glance: sales, revenue and disputes per day as charts (7 / 30 / 90 days), stock with low-stock
    warnings, recent orders, open disputes with their deadlines, and the balance."""
    from django.utils.translation import gettext_lazy

    from core.money import display
    from escrow import dashboard as figures
    from shop.selectors import merchant_products_with_stock

    merchant = request.merchant
    days = int(request.GET.get("days", 30)) if request.GET.get("days", "30").isdigit() else 30
    days = days if days in figures.PERIODS else 30
    currencies = figures.currencies_of(merchant=merchant)
    currency = request.GET.get("currency") if request.GET.get("currency") in currencies else currencies[0]
    series = figures.merchant_series(merchant=merchant, days=days, currency=currency)

    def money_label(value: int) -> str:
        return display(value, currency)

    def count_label(value: int) -> str:
        return str(value)

    charts = [
        {
            "id": "sales",
            "title": gettext_lazy("Sales (paid orders)"),
            "svg": figures.chart_svg_data(
                lines=[figures.Line(gettext_lazy("Orders"), series.sales, "line-1")],
                days=series.days,
                label_of=count_label,
            ),
        },
        {
            "id": "revenue",
            "title": gettext_lazy("Revenue"),
            "svg": figures.chart_svg_data(
                lines=[
                    figures.Line(gettext_lazy("Gross (what buyers paid)"), series.gross, "line-1"),
                    figures.Line(gettext_lazy("Net (your share)"), series.net, "line-2"),
                    figures.Line(gettext_lazy("Fees"), series.fees, "line-3"),
                ],
                days=series.days,
                label_of=money_label,
            ),
        },
        {
            "id": "disputes",
            "title": gettext_lazy("Disputes opened"),
            "svg": figures.chart_svg_data(
                lines=[figures.Line(gettext_lazy("Disputes"), series.disputes, "line-4")],
                days=series.days,
                label_of=count_label,
            ),
        },
    ]
    products = list(merchant_products_with_stock(merchant=merchant))
    return render(
        request,
        "escrow/merchant/dashboard.html",
        {
            "days": days,
            "periods": figures.PERIODS,
            "currency": currency,
            "currencies": currencies,
            "totals": series.totals,
            "charts": charts,
            "low_stock": [p for p in products if p.available < p.low_stock_threshold],
            "products": products,
            "recent": merchant_orders(merchant)[:8],
            "disputes": figures.open_disputes(merchant=merchant),
            "balances": merchant_balances(merchant),
        },
    )
