"""Reads of the risk app that need more than one line."""

from datetime import datetime

from django.db.models import QuerySet

from risk.models import Decision, ReviewItem, ReviewStatus, Rule
from risk.signals import signal_describe


def review_items_open() -> QuerySet[ReviewItem]:
    return ReviewItem.objects.filter(status=ReviewStatus.OPEN).order_by("created_at", "pk")


def decisions_filter(
    *, since: datetime | None, event: str, outcome: str, subject_type: str, subject_id: str
) -> QuerySet[Decision]:
    decisions = Decision.objects.order_by("-pk")
    if since is not None:
        decisions = decisions.filter(at__gte=since)
    for field, value in (
        ("event", event),
        ("outcome", outcome),
        ("subject_type", subject_type),
        ("subject_id", subject_id),
    ):
        if value:
            decisions = decisions.filter(**{field: value})
    return decisions


def rules_described() -> list[dict]:
    """Every rule, grouped by event in the order they are evaluated, in plain words."""
    from risk.context import Outcome

    rules = sorted(Rule.objects.all(), key=lambda r: (r.event, Outcome.ORDER.index(r.outcome), r.pk))
    return [
        {
            "rule": rule,
            "signal_words": signal_describe(rule.signal),
        }
        for rule in rules
    ]
