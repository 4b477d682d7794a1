"""The merchant's dispute pages, in the merchant area (a second-factor-verified session, like every
merchant page). Another merchant's dispute answers 404. Every answer is a `disputes.services` call."""

from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from disputes import services
from disputes.forms import MessageForm, StatementForm
from disputes.models import DisputeStatus, MessageRole
from disputes.selectors import dispute_for_viewer, disputes_of_merchant
from disputes.views import _page_context, party_step_run
from shop.permissions import merchant_required


def _merchant_dispute(request, pk: int):
    dispute, role = dispute_for_viewer(pk=pk, user=request.user, order_token=None)
    if role != MessageRole.MERCHANT or dispute.order.merchant_id != request.merchant.pk:
        raise Http404
    return dispute


@merchant_required
def dispute_list(request):
    """The merchant's disputes, the nearest deadline first (unresolved ones before resolved ones)."""
    disputes = list(disputes_of_merchant(merchant=request.merchant)[:500])
    disputes.sort(key=lambda dispute: (dispute.status == DisputeStatus.RESOLVED, dispute.deadline))
    return render(request, "disputes/merchant_list.html", {"disputes": disputes})


@merchant_required
@never_cache
def dispute_page(request, pk: int):
    dispute = _merchant_dispute(request, pk)
    base = reverse("merchant_disputes:detail", kwargs={"pk": dispute.pk})
    return render(
        request,
        "disputes/merchant.html",
        _page_context(
            dispute,
            urls={action: f"{base}{action}/" for action in ("message", "replace", "refund", "contest")},
            message_form=MessageForm(),
            statement_form=StatementForm(),
            can_answer=dispute.status == DisputeStatus.OPEN,
        ),
    )


@merchant_required
@require_POST
def dispute_act(request, pk: int, action: str):
    """The merchant's answers: replace the disputed keys, refund (them or the whole order), contest with a
    statement and screenshots, or write a message."""
    dispute = _merchant_dispute(request, pk)
    now, actor = timezone.now(), request.user
    steps = {
        "replace": lambda data: services.dispute_replace(dispute_pk=dispute.pk, now=now, actor=actor),
        "refund": lambda data: services.dispute_refund(
            dispute_pk=dispute.pk, now=now, full=request.POST.get("full") == "1", actor=actor
        ),
        "contest": lambda data: services.dispute_contest(
            dispute_pk=dispute.pk, statement=data["statement"], now=now, actor=actor
        ),
        "message": lambda data: services.dispute_message_post(
            dispute_pk=dispute.pk, role=MessageRole.MERCHANT, body=data["body"], now=now, author=actor
        ),
    }
    return party_step_run(
        request,
        dispute=dispute,
        steps=steps,
        action=action,
        role=MessageRole.MERCHANT,
        now=now,
        back=reverse("merchant_disputes:detail", kwargs={"pk": dispute.pk}),
    )
