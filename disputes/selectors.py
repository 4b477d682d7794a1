from datetime import datetime

from django.db.models import BooleanField, Case, Q, QuerySet, Value, When
from django.http import Http404

from accounts.models import AuditAction, AuditEntry, User
from disputes.models import Dispute, DisputeStatus, MessageRole
from escrow.models import DisputeAction, DisputeActionKind, KeyReveal, Order, Transfer, token_hash
from escrow.services import fee_percent_for, split_amounts
from shop.models import CardKey, CardKeyStatus


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
        .select_related("order__merchant", "order__product")
        .annotate(
            is_overdue=Case(When(deadline__lt=now, then=Value(True)), default=Value(False), output_field=BooleanField())
        )
        .order_by("deadline", "pk")
    )


# --- the shop's own evidence (read from escrow and shop; neither party can write these rows) ----------


def dispute_delivery_events(*, dispute: Dispute) -> list[AuditEntry]:
    """When the order's keys were delivered and replaced, from the audit trail (the shop writes it)."""
    return list(
        AuditEntry.objects.filter(
            subject_type=Order._meta.label_lower,
            subject_id=str(dispute.order_id),
            action__in=[AuditAction.ORDER_DELIVERED, AuditAction.ORDER_KEY_REPLACED],
        ).order_by("at", "pk")
    )


def dispute_reveals(*, dispute: Dispute) -> list[KeyReveal]:
    """Every time the order's keys were shown: when, to whom, from which address and browser."""
    return list(KeyReveal.objects.filter(order_id=dispute.order_id).select_related("user").order_by("at", "pk"))


def dispute_replacements(*, dispute: Dispute) -> list[DisputeAction]:
    """Each key swapped during the dispute, with the key it replaced and the fresh one."""
    return list(
        DisputeAction.objects.filter(order_id=dispute.order_id, kind=DisputeActionKind.REPLACE_KEY).order_by("pk")
    )


def dispute_replaced_key_count(*, dispute: Dispute) -> int:
    return CardKey.objects.filter(order_id=dispute.order_id, status=CardKeyStatus.REPLACED).count()


def buyer_dispute_history(*, dispute: Dispute) -> list[Dispute]:
    """This buyer's other disputes (by account, or by e-mail for a guest) and their outcomes."""
    order = dispute.order
    same_buyer = Q(order__buyer_id=order.buyer_id) if order.buyer_id else Q(order__email__iexact=order.email)
    return list(Dispute.objects.filter(same_buyer).exclude(pk=dispute.pk).select_related("order").order_by("-pk"))


def merchant_product_dispute_rate(*, dispute: Dispute) -> dict:
    """How often this product of this merchant is disputed: disputes over delivered orders."""
    order = dispute.order
    delivered = Order.objects.filter(
        merchant_id=order.merchant_id, product_id=order.product_id, delivered_at__isnull=False
    ).count()
    disputed = Dispute.objects.filter(order__merchant_id=order.merchant_id, order__product_id=order.product_id).count()
    percent = round(100 * disputed / delivered, 1) if delivered else 0.0
    return {"disputed": disputed, "delivered": delivered, "percent": percent}


def dispute_split_preview(*, dispute: Dispute, buyer_percent: int) -> dict:
    """What a split at `buyer_percent` would move: the buyer's refund, the merchant's share and the fee,
    by the same function the decision books with."""
    order = dispute.order
    refund, share, fee = split_amounts(
        paid=order.amount, buyer_percent=buyer_percent, fee_percent=fee_percent_for(order.merchant)
    )
    return {"buyer_percent": buyer_percent, "refund": refund, "share": share, "fee": fee, "currency": order.currency}


def dispute_ledger_transfers(*, dispute: Dispute) -> list[Transfer]:
    return list(
        Transfer.objects.filter(order_id=dispute.order_id)
        .select_related("debit_account", "credit_account")
        .order_by("pk")
    )


def dispute_evidence(*, dispute: Dispute) -> dict:
    """Everything the arbitration page and the evidence package show, read once."""
    return {
        "deliveries": dispute_delivery_events(dispute=dispute),
        "reveals": dispute_reveals(dispute=dispute),
        "replacements": dispute_replacements(dispute=dispute),
        "replaced_keys": dispute_replaced_key_count(dispute=dispute),
        "buyer_history": buyer_dispute_history(dispute=dispute),
        "merchant_rate": merchant_product_dispute_rate(dispute=dispute),
        "messages": list(dispute.messages.select_related("author").order_by("pk")),
        "payments": list(dispute.order.payments.order_by("pk")),
        "transfers": dispute_ledger_transfers(dispute=dispute),
    }
