"""The signed-in buyer's daily spending limits (the model and its rules are in accounts; what counts as
spent is escrow's, so the page is here)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache

from accounts.models import SpendingLimit
from accounts.services import spending_day_start, spending_limit_set
from core.errors import Refused
from core.money import Currency, display, from_major
from escrow.forms import SpendingLimitForm
from escrow.selectors import buyer_spent_since


@never_cache
@login_required
def spending_limits(request):
    now = timezone.now()
    form = SpendingLimitForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        currency = form.cleaned_data["currency"]
        amount = form.cleaned_data["amount"]
        try:
            limit = spending_limit_set(
                user=request.user,
                currency=currency,
                amount=None if amount is None else from_major(str(amount), currency),
                now=now,
            )
        except Refused as refused:
            form.add_error(None, str(refused))
        else:
            if limit.pending_from is None:
                messages.success(request, _("Your new limit applies now."))
            else:
                messages.success(
                    request,
                    _("A higher limit protects you less, so it applies in 24 hours, from %(when)s UTC.")
                    % {"when": f"{limit.pending_from:%Y-%m-%d %H:%M}"},
                )
            return redirect("limits:spending")
    limits = {limit.currency: limit for limit in SpendingLimit.objects.filter(user=request.user)}
    day_start = spending_day_start(now)
    rows = []
    for currency, name in Currency.choices:
        limit = limits.get(currency)
        daily = limit.effective_amount(now) if limit is not None else None
        spent = buyer_spent_since(buyer=request.user, currency=currency, since=day_start)
        pending = limit is not None and limit.pending_from is not None and limit.pending_from > now
        rows.append(
            {
                "currency": currency,
                "name": name,
                "limit": None if daily is None else display(daily, currency),
                "spent": display(spent, currency),
                "left": None if daily is None else display(max(0, daily - spent), currency),
                "pending": pending,
                "pending_amount": (
                    None if not pending or limit.pending_amount is None else display(limit.pending_amount, currency)
                ),
                "pending_from": limit.pending_from if pending else None,
            }
        )
    return render(request, "escrow/spending_limits.html", {"form": form, "rows": rows, "day_start": day_start})
