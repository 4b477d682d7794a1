"""The disputes of a person's "Download my activity" file (accounts.hooks.ACTIVITY_SECTIONS): those on
their own orders, and for a merchant's owner those against their shop. Scoped to the person asking."""

from collections.abc import Iterator

from django.db.models import Q

from accounts.hooks import ActivityRow
from disputes.models import Dispute


def disputes_rows(user) -> Iterator[ActivityRow]:
    disputes = Dispute.objects.filter(Q(order__buyer=user) | Q(order__merchant__user=user)).select_related("order")
    for dispute in disputes.order_by("created_at", "pk"):
        side = "buyer" if dispute.order.buyer_id == user.pk else "merchant"
        yield ActivityRow(
            at=dispute.created_at,
            section="dispute",
            reference=f"dispute {dispute.pk} (order {dispute.order_id})",
            what=dispute.status,
            details=f"as {side}; reason {dispute.reason}; outcome {dispute.outcome or '-'}; "
            f"resolved {dispute.resolved_at or '-'}",
        )
