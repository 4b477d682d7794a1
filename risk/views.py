"""Staff pages: the rules in plain words, and the review queue with approve / reject."""

from django import forms
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_otp.decorators import otp_required

from core.errors import Refused
from risk import selectors, services


class ReviewDecisionForm(forms.Form):
    decision = forms.ChoiceField(
        label=gettext_lazy("Decision"),
        choices=[("approve", gettext_lazy("Approve")), ("reject", gettext_lazy("Reject"))],
    )
    reason = forms.CharField(label=gettext_lazy("Reason"), max_length=500)


@staff_member_required
@otp_required
def rules_page(request):
    return render(request, "risk/rules.html", {"rules": selectors.rules_described()})


@staff_member_required
@otp_required
def review_queue_page(request):
    if request.method == "POST":
        form = ReviewDecisionForm(request.POST)
        item_pk = request.POST.get("item", "")
        if form.is_valid() and item_pk.isdigit():
            try:
                services.review_decide(
                    item_pk=int(item_pk),
                    approve=form.cleaned_data["decision"] == "approve",
                    staff=request.user,
                    now=timezone.now(),
                    note=form.cleaned_data["reason"],
                )
            except Refused as refusal:
                messages.error(request, str(refusal))
            else:
                messages.success(request, _("Review item %(pk)s decided.") % {"pk": item_pk})
            return redirect("risk:review_queue")
        messages.error(request, _("Choose approve or reject and give a reason."))
    return render(
        request,
        "risk/review_queue.html",
        {"items": selectors.review_items_open().select_related("decision"), "now": timezone.now()},
    )
