"""The console's queues: for each, the rows waiting (oldest first, filtered by `q`), how many, and the
age of the oldest. Each reads its owning app's models or selectors; no queue writes anything."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy as _

from accounts.models import Alert
from disputes.selectors import disputes_arbitration_queue
from escrow.models import Order, OrderStatus, Withdrawal, WithdrawalStatus
from shop.models import Merchant, MerchantStatus


@dataclass(frozen=True)
class Queue:
    slug: str
    title: str
    hint: str
    rows: Callable[..., QuerySet]  # rows(q=…, now=…), oldest first
    since: str  # the field that says how long a row has waited


def _merchants(*, q: str, now: datetime) -> QuerySet:
    rows = Merchant.objects.filter(status=MerchantStatus.PENDING).select_related("user").order_by("created_at", "pk")
    if q:
        rows = rows.filter(Q(name__icontains=q) | Q(user__email__icontains=q) | Q(contact__icontains=q))
    return rows


def _held_orders(*, q: str, now: datetime) -> QuerySet:
    rows = (
        Order.objects.filter(status=OrderStatus.HELD_FOR_REVIEW)
        .select_related("product", "merchant")
        .order_by("created_at", "pk")
    )
    if q:
        number = q.lstrip("#")
        rows = rows.filter(pk=int(number)) if number.isdigit() else rows.filter(email__iexact=q)
    return rows


def _disputes(*, q: str, now: datetime) -> QuerySet:
    rows = disputes_arbitration_queue(now=now)
    if q:
        number = q.lstrip("#")
        rows = (
            rows.filter(Q(pk=int(number)) | Q(order_id=int(number)))
            if number.isdigit()
            else rows.filter(order__merchant__name__icontains=q)
        )
    return rows


def _withdrawals(*, q: str, now: datetime) -> QuerySet:
    rows = (
        Withdrawal.objects.filter(status=WithdrawalStatus.REQUESTED)
        .select_related("merchant", "payout_account")
        .order_by("requested_at", "pk")
    )
    if q:
        rows = (
            rows.filter(pk=int(q.lstrip("#"))) if q.lstrip("#").isdigit() else rows.filter(merchant__name__icontains=q)
        )
    return rows


def _alerts(*, q: str, now: datetime) -> QuerySet:
    rows = Alert.objects.filter(acknowledged_at__isnull=True).order_by("created_at", "pk")
    if q:
        rows = rows.filter(Q(kind__icontains=q) | Q(message__icontains=q))
    return rows


QUEUES = [
    Queue(
        "merchants",
        _("Merchants awaiting approval"),
        _("New shops cannot sell until staff approve them."),
        _merchants,
        "created_at",
    ),
    Queue(
        "held-orders",
        _("Orders held for review"),
        _(
            "Payments that did not match their order. Products have no review state: a product is on sale"
            " or paused by its merchant, so this is the product-side queue that exists."
        ),
        _held_orders,
        "created_at",
    ),
    # RISK_SLOT: the risk review queue (risk/, being built) goes here as a Queue("risk", …) whose rows
    # read risk's review-queue selector; the console and its page need nothing else.
    Queue(
        "disputes",
        _("Disputes awaiting arbitration"),
        _("Escalated disputes, closest deadline first."),
        _disputes,
        "escalated_at",
    ),
    Queue(
        "withdrawals",
        _("Withdrawals awaiting approval"),
        _("Pay each out from the platform's account, then record the payout reference."),
        _withdrawals,
        "requested_at",
    ),
    Queue(
        "alerts",
        _("Reconciliation alerts"),
        _("Differences between the ledger and a gateway's books, and other alerts raised for staff."),
        _alerts,
        "created_at",
    ),
]
BY_SLUG = {queue.slug: queue for queue in QUEUES}


def queue_summary(*, now: datetime) -> list[dict]:
    """Each queue with its count and the oldest row's waiting time (None when empty): two queries each."""
    summary = []
    for queue in QUEUES:
        rows = queue.rows(q="", now=now)
        oldest = rows.order_by(queue.since).values_list(queue.since, flat=True).first()
        summary.append({"queue": queue, "count": rows.count(), "oldest": oldest})
    return summary
