"""Thin Celery tasks: one service call each, safe to run twice."""

from celery import shared_task
from django.utils import timezone

from accounts import services


@shared_task(name="accounts.audit_chain_seal", acks_late=True)
def audit_chain_seal_task() -> int:
    return services.audit_chain_seal()


@shared_task(name="accounts.audit_checkpoint_publish", acks_late=True)
def audit_checkpoint_publish_task() -> int | None:
    services.audit_chain_seal()
    checkpoint = services.audit_checkpoint_publish(now=timezone.now())
    return checkpoint.seq if checkpoint is not None else None
