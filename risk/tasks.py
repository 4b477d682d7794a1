"""Periodic work of the risk engine (the schedule and its reasons are in config/celery.py)."""

from celery import shared_task
from django.utils import timezone

from risk.velocity import velocity_prune


@shared_task(name="risk.velocity_prune", acks_late=True)
def velocity_prune_task() -> int:
    """Delete database velocity hits past the longest window; safe to run twice (the second finds none)."""
    return velocity_prune(now=timezone.now())
