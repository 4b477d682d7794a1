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
from risk.selectors import review_items_open
from shop.models import Merchant, MerchantStatus, Product, ProductStatus


@dataclass(frozen=True)
class Queue:
    slug: str
    title: str
    hint: str
    rows: Callable[..., QuerySet]  # rows(q=…, now=…), oldest first
    since: str  # the field that says how long a row has waited
    # Where staff decide, when that is a page of its owning app rather than this queue's own page.
    decide_url: str = ""


def _merchants(*, q: str, now: datetime) -> QuerySet:
    rows = (
        Merchant.objects.filter(status=MerchantStatus.PENDING)
        .select_related("user", "kyc")
        .order_by("created_at", "pk")
    )
    if q:
        rows = rows.filter(
            Q(name__icontains=q)
            | Q(user__email__icontains=q)
            | Q(contact__icontains=q)
            | Q(kyc__legal_name__icontains=q)
        )
    return rows


def _products(*, q: str, now: datetime) -> QuerySet:
    rows = (
        Product.objects.filter(status=ProductStatus.AWAITING_REVIEW)
        .select_related("merchant", "category")
        .order_by("review_requested_at", "pk")
    )
    if q:
        number = q.lstrip("#")
        rows = (
            rows.filter(pk=int(number))
            if number.isdigit()
            else rows.filter(Q(title__icontains=q) | Q(merchant__name__icontains=q))
        )
    return rows


def _risk(*, q: str, now: datetime) -> QuerySet:
    """Risk's open review items (held orders, held withdrawals, flagged disputes, frozen accounts,
    flagged merchants): by kind (`order`, `withdrawal` …), subject number or e-mail."""
    rows = review_items_open()
    if q:
        number = q.lstrip("#")
        if number.isdigit():
            rows = rows.filter(Q(pk=int(number)) | Q(subject_id=number))
        else:
            rows = rows.filter(Q(kind__iexact=q) | Q(email__icontains=q))
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
        "products",
        _("Products awaiting review"),
        _(
            "New products in a sensitive category, or of a merchant whose dispute rate raised their reserve:"
            " not listed until staff approve them."
        ),
        _products,
        "review_requested_at",
    ),
    Queue(
        "held-orders",
        _("Orders held for review"),
        _("Paid orders held before delivery (a payment that did not match its order, or risk's review)."),
        _held_orders,
        "created_at",
    ),
    # RISK_SLOT: risk's review queue, read from its selector; staff decide on risk's own page.
    Queue(
        "risk",
        _("Risk review queue"),
        _("Held orders, held withdrawals, flagged disputes and merchants, frozen accounts: each with its reasons."),
        _risk,
        "created_at",
        decide_url="risk:review_queue",
    ),
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
