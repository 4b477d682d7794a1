"""Reputation: the buyer's rating of a completed order, and a merchant's public figures.

Every figure is computed from orders, disputes, their outcomes and timestamps when asked, never stored
by hand: `merchant_reputation` answers in four aggregate queries whatever the merchant's size.
"""

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, models, transaction
from django.db.models import Avg, Count, F, Q
from django.utils.translation import gettext as _

from core.errors import Refused
from disputes.models import RATING_COMMENT_MAX_LENGTH, Dispute, DisputeOutcome, DisputeStatus, Rating
from escrow.models import Order, OrderStatus
from shop.models import Merchant

# The window of the dispute rate: disputes opened / orders delivered, both in the last 90 days.
DISPUTE_RATE_DAYS = 90


class RatingError(Refused):
    """A rating the rules refuse; nothing was saved."""

    code_statuses = {**Refused.code_statuses, "already_rated": 409, "not_completed": 409}
    code_fields = {"invalid_stars": "stars", "comment_too_long": "comment"}


@transaction.atomic
def rating_create(*, order: Order, stars: int, comment: str, now: datetime) -> Rating:
    """The buyer rates the merchant of `order` (whose ownership the caller checked: token or signed-in
    buyer): 1 to 5 stars and an optional comment of at most 500 characters, once per order and only once
    the order is completed. Refuses `not_completed`, `invalid_stars`, `comment_too_long` and, on a second
    rating (the order's unique constraint decides, so two racing posts leave one), `already_rated`."""
    if order.status != OrderStatus.COMPLETED:
        raise RatingError(_("Only a completed order can be rated."), code="not_completed")
    if not isinstance(stars, int) or isinstance(stars, bool) or not 1 <= stars <= 5:
        raise RatingError(_("Choose from 1 to 5 stars."), code="invalid_stars")
    comment = (comment or "").strip()
    if len(comment) > RATING_COMMENT_MAX_LENGTH:
        raise RatingError(
            _("The comment may be at most %(max)d characters.") % {"max": RATING_COMMENT_MAX_LENGTH},
            code="comment_too_long",
        )
    try:
        with transaction.atomic():
            return Rating.objects.create(
                order=order, merchant_id=order.merchant_id, stars=stars, comment=comment, created_at=now
            )
    except IntegrityError as error:
        if Rating.objects.filter(order=order).exists():
            raise RatingError(_("This order has already been rated."), code="already_rated") from error
        raise


@dataclass(frozen=True)
class Reputation:
    rating_average: float | None
    rating_count: int
    completed_orders: int
    # Over the last DISPUTE_RATE_DAYS: disputes opened, orders delivered, and their ratio (None: no orders).
    disputes_recent: int
    delivered_recent: int
    dispute_rate: float | None
    # Of the resolved disputes: how many were decided against the merchant, and the share (None: none resolved).
    disputes_resolved: int
    disputes_against: int
    against_share: float | None
    median_answer: timedelta | None
    member_since: datetime


class _Median(models.Aggregate):
    """PostgreSQL's exact median of a duration."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = models.DurationField()


def _answer_time():
    return models.ExpressionWrapper(F("merchant_answered_at") - F("created_at"), output_field=models.DurationField())


def merchant_reputation(merchant_pk: int, now: datetime) -> Reputation:
    """A merchant's public figures as of `now`, computed from the data.

    - rating: the average stars and the count of the buyers' ratings;
    - completed orders: orders completed by `now`;
    - dispute rate: disputes opened / orders delivered, both within [now - 90 days, now];
    - decided against the merchant: resolved disputes whose outcome was a refund, or a split giving the
      buyer more than 0 %, out of all resolved disputes;
    - median time to answer: from a dispute's opening to the merchant's first answer (replace, refund or
      contest); disputes the merchant left unanswered are not in it (their silence refunds the buyer and
      counts against them above);
    - member since: when the merchant signed up.
    Raises `Merchant.DoesNotExist` for an unknown merchant.
    """
    merchant = Merchant.objects.only("created_at").get(pk=merchant_pk)
    since = now - timedelta(days=DISPUTE_RATE_DAYS)
    ratings = Rating.objects.filter(merchant_id=merchant_pk, created_at__lte=now).aggregate(
        average=Avg("stars"), count=Count("pk")
    )
    orders = Order.objects.filter(merchant_id=merchant_pk).aggregate(
        completed=Count("pk", filter=Q(status=OrderStatus.COMPLETED, completed_at__lte=now)),
        delivered=Count("pk", filter=Q(delivered_at__gte=since, delivered_at__lte=now)),
    )
    disputes = Dispute.objects.filter(order__merchant_id=merchant_pk)
    resolved = Q(status=DisputeStatus.RESOLVED, resolved_at__lte=now)
    against = resolved & (Q(outcome=DisputeOutcome.REFUNDED) | Q(outcome=DisputeOutcome.SPLIT, buyer_percent__gt=0))
    answered = Q(merchant_answered_at__isnull=False, merchant_answered_at__lte=now)
    figures = {
        "recent": Count("pk", filter=Q(created_at__gte=since, created_at__lte=now)),
        "resolved": Count("pk", filter=resolved),
        "against": Count("pk", filter=against),
    }
    if connection.vendor == "postgresql":
        figures["median"] = _Median(_answer_time(), filter=answered)
    counts = disputes.aggregate(**figures)
    if "median" not in counts:  # SQLite has no percentile_cont: the durations, not the orders, come back
        durations = sorted(disputes.filter(answered).annotate(took=_answer_time()).values_list("took", flat=True))
        counts["median"] = statistics.median(durations) if durations else None
    return Reputation(
        rating_average=float(ratings["average"]) if ratings["average"] is not None else None,
        rating_count=ratings["count"],
        completed_orders=orders["completed"],
        disputes_recent=counts["recent"],
        delivered_recent=orders["delivered"],
        dispute_rate=counts["recent"] / orders["delivered"] if orders["delivered"] else None,
        disputes_resolved=counts["resolved"],
        disputes_against=counts["against"],
        against_share=counts["against"] / counts["resolved"] if counts["resolved"] else None,
        median_answer=counts["median"],
        member_since=merchant.created_at,
    )


@dataclass(frozen=True)
class RatingSummary:
    average: float
    count: int


def ratings_of_merchants(merchant_pks: set[int]) -> dict[int, RatingSummary]:
    """Average stars and count per merchant, for the merchants that have ratings, in one query."""
    if not merchant_pks:
        return {}
    rows = (
        Rating.objects.filter(merchant_id__in=merchant_pks)
        .values("merchant_id")
        .annotate(average=Avg("stars"), count=Count("pk"))
        .order_by()
    )
    return {row["merchant_id"]: RatingSummary(float(row["average"]), row["count"]) for row in rows}


def latest_ratings(merchant_pk: int, *, limit: int = 20):
    return Rating.objects.filter(merchant_id=merchant_pk).order_by("-created_at", "-pk")[:limit]
