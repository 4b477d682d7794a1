"""The evidence package for the two parties of a dispute: the signed-in buyer, the guest buyer through
their order link, and the merchant. Anyone else gets 404, as for a dispute that does not exist."""

from django.http import Http404, HttpResponse
from django.utils import timezone

from accounts.two_factor import two_factor_gate
from disputes import evidence
from disputes.models import Dispute, MessageRole
from disputes.selectors import dispute_for_viewer, dispute_role


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


def merchant_dispute_evidence(request, pk: int) -> HttpResponse:
    user = request.user
    dispute = None
    if user.is_authenticated:
        dispute = Dispute.objects.select_related("order__merchant").filter(pk=pk, order__merchant__user=user).first()
    if dispute is None:
        raise Http404
    # The merchant area needs a session that passed a second factor (checked after ownership: a
    # stranger learns nothing, not even that the dispute exists).
    gate = two_factor_gate(request)
    if gate is not None:
        return gate
    return evidence.evidence_response(dispute=dispute, now=timezone.now())
