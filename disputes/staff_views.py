"""Staff arbitration pages: the queue of escalated disputes and one page per dispute holding both
sides, the shop's own evidence, the decision form and the question form. Every write goes through
`disputes.services`; every page needs a staff session that passed a second factor."""

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.two_factor import verified_required
from disputes import evidence, selectors, services
from disputes.forms import DecisionForm, QuestionForm
from disputes.models import Dispute, DisputeStatus, MessageRole

SPLIT_PREVIEW_DEFAULT = 50


def _dispute(pk: int) -> Dispute:
    dispute = Dispute.objects.select_related("order__merchant", "order__product", "order__buyer").filter(pk=pk).first()
    if dispute is None:
        raise Http404
    return dispute


@staff_member_required
@verified_required
def staff_dispute_queue(request):
    now = timezone.now()
    return render(
        request,
        "disputes/staff/queue.html",
        {
            "disputes": selectors.disputes_arbitration_queue(now=now),
            "arbitration_hours": settings.DISPUTE_ARBITRATION_HOURS,
            "now": now,
        },
    )


def _detail(request, dispute: Dispute, *, decision: DecisionForm, question: QuestionForm, status: int = 200):
    # The preview shows the percentage staff just submitted, else a midpoint.
    submitted = getattr(decision, "cleaned_data", {}).get("buyer_percent")
    percent = submitted if isinstance(submitted, int) else SPLIT_PREVIEW_DEFAULT
    return render(
        request,
        "disputes/staff/detail.html",
        {
            "dispute": dispute,
            "order": dispute.order,
            "evidence": selectors.dispute_evidence(dispute=dispute),
            "preview": selectors.dispute_split_preview(dispute=dispute, buyer_percent=percent),
            "previews": [selectors.dispute_split_preview(dispute=dispute, buyer_percent=p) for p in (25, 50, 75)],
            "decision": decision,
            "question": question,
            "can_decide": dispute.status == DisputeStatus.ESCALATED,
            "is_open": dispute.status != DisputeStatus.RESOLVED,
            "is_overdue": dispute.status == DisputeStatus.ESCALATED and dispute.deadline < timezone.now(),
        },
        status=status,
    )


@staff_member_required
@verified_required
def staff_dispute_detail(request, pk: int):
    dispute = _dispute(pk)
    return _detail(request, dispute, decision=DecisionForm(), question=QuestionForm())


@require_POST
@staff_member_required
@verified_required
def staff_dispute_decide(request, pk: int):
    dispute = _dispute(pk)
    form = DecisionForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.dispute_decide(
                dispute_pk=dispute.pk,
                outcome=data["outcome"],
                buyer_percent=data["buyer_percent"] if data["outcome"] == "split" else None,
                reason=data["reason"],
                now=timezone.now(),
                actor=request.user,
            )
        except services.DisputeError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, _("Dispute %(pk)s is decided.") % {"pk": dispute.pk})
            return redirect("staff_disputes:detail", dispute.pk)
    dispute.refresh_from_db()
    return _detail(request, dispute, decision=form, question=QuestionForm(), status=400)


@require_POST
@staff_member_required
@verified_required
def staff_dispute_ask(request, pk: int):
    dispute = _dispute(pk)
    form = QuestionForm(request.POST)
    if form.is_valid():
        try:
            services.dispute_message_post(
                dispute_pk=dispute.pk,
                role=MessageRole.STAFF,
                body=form.cleaned_data["body"],
                question_for=form.cleaned_data["question_for"],
                now=timezone.now(),
                author=request.user,
            )
        except services.DisputeError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, _("Your question is sent."))
            return redirect("staff_disputes:detail", dispute.pk)
    return _detail(request, dispute, decision=DecisionForm(), question=form, status=400)


@staff_member_required
@verified_required
def staff_dispute_evidence(request, pk: int) -> HttpResponse:
    return evidence.evidence_response(dispute=_dispute(pk), now=timezone.now())
