from datetime import datetime

from django.db.models import BooleanField, Case, QuerySet, Value, When
from django.http import Http404

from accounts.models import User
from disputes.models import Dispute, DisputeStatus, MessageRole
from escrow.models import token_hash


def dispute_role(*, dispute: Dispute, user: User | None, order_token: str | None) -> str | None:
    """How this viewer stands to the dispute: "buyer", "merchant", "staff", or None (a stranger).

    A guest buyer proves it with the order's access token; signed-in buyers, merchants and staff by who
    they are."""
    order = dispute.order
    if order_token and order.access_token_hash == token_hash(order_token):
        return MessageRole.BUYER
    if user is None or not user.is_authenticated:
        return None
    if order.buyer_id == user.pk:
        return MessageRole.BUYER
    if order.merchant.user_id == user.pk:
        return MessageRole.MERCHANT
    if user.is_staff:
        return MessageRole.STAFF
    return None


def dispute_for_viewer(*, pk: int, user: User | None, order_token: str | None) -> tuple[Dispute, str]:
    """The dispute and the viewer's role in it; anyone but the two parties and staff gets Http404, so a
    guessed id looks like a missing one."""
    dispute = Dispute.objects.select_related("order__merchant").filter(pk=pk).first()
    role = dispute_role(dispute=dispute, user=user, order_token=order_token) if dispute is not None else None
    if role is None:
        raise Http404
    return dispute, role


def disputes_of_merchant(*, merchant) -> QuerySet[Dispute]:
    return Dispute.objects.filter(order__merchant=merchant).select_related("order").order_by("deadline", "pk")


def disputes_arbitration_queue(*, now: datetime) -> QuerySet[Dispute]:
    """Escalated disputes, closest to the arbitration deadline first, each with `is_overdue`."""
    return (
        Dispute.objects.filter(status=DisputeStatus.ESCALATED)
        .select_related("order")
        .annotate(
            is_overdue=Case(When(deadline__lt=now, then=Value(True)), default=Value(False), output_field=BooleanField())
        )
        .order_by("deadline", "pk")
    )
