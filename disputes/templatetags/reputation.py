"""`{% load reputation %}{% merchant_reputation product.merchant %}`: a merchant's figures on any page,
so that escrow's product page shows them without escrow importing this app."""

from django import template
from django.utils import timezone

from disputes.reputation import DISPUTE_RATE_DAYS, ratings_of_merchants
from disputes.reputation import merchant_reputation as reputation_of

register = template.Library()


@register.inclusion_tag("disputes/_reputation.html")
def merchant_reputation(merchant):
    return {"merchant": merchant, "reputation": reputation_of(merchant.pk, timezone.now()), "days": DISPUTE_RATE_DAYS}


@register.filter
def percent(value) -> str:
    """A share (0..1) as a whole-ish percentage: `0.125` → `12.5`."""
    return f"{value * 100:.1f}".removesuffix(".0")


@register.filter
def hours(value) -> str:
    """A duration in hours, one decimal: `timedelta(minutes=90)` → `1.5`."""
    return f"{value.total_seconds() / 3600:.1f}".removesuffix(".0")


@register.simple_tag
def merchant_ratings(products) -> dict:
    """`{% merchant_ratings page.object_list as ratings %}`: the average stars and the count of every
    merchant on a page of products, in one query (`{{ ratings|rating_of:product.merchant_id }}`), so
    shop's catalogue shows ratings without importing this app and without a query per card."""
    return ratings_of_merchants({product.merchant_id for product in products})


@register.filter
def rating_of(ratings: dict, merchant_pk: int):
    return ratings.get(merchant_pk)
