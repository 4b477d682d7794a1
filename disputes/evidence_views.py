"""The evidence package for the two parties of a dispute: the signed-in buyer, the guest buyer through
their order link, and the merchant. Anyone else gets 404, as for a dispute that does not exist."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.utils import timezone

from disputes import evidence
from disputes.models import Dispute, MessageRole
from disputes.selectors import dispute_for_viewer, dispute_role
from shop.permissions import merchant_required


@login_required
def buyer_dispute_evidence(request, pk: int) -> HttpResponse:
    dispute, role = dispute_for_viewer(pk=pk, user=request.user, order_token=None)
    if role != MessageRole.BUYER:
        raise Http404
    return evidence.evidence_response(dispute=dispute, now=timezone.now())


def guest_dispute_evidence(request, pk: int, token: str) -> HttpResponse:
    dispute = Dispute.objects.select_related("order__merchant").filter(order_id=pk).first()
    if dispute is None or dispute_role(dispute=dispute, user=None, order_token=token) != MessageRole.BUYER:
        raise Http404
    return evidence.evidence_response(dispute=dispute, now=timezone.now())


@merchant_required
def merchant_dispute_evidence(request, pk: int) -> HttpResponse:
    dispute = Dispute.objects.select_related("order__merchant").filter(pk=pk, order__merchant=request.merchant).first()
    if dispute is None:
        raise Http404
    return evidence.evidence_response(dispute=dispute, now=timezone.now())
