from celery import shared_task
from django.utils import timezone

from core.mail import MAIL_ERRORS, mail_retry
from disputes import services


@shared_task(name="disputes.disputes_sweep", acks_late=True)
def disputes_sweep_task() -> int:
    """Apply the silence rules of disputes whose deadline passed."""
    return services.disputes_sweep(now=timezone.now())


@shared_task(name="disputes.dispute_notify", bind=True, acks_late=True, max_retries=8)
def dispute_notify_task(self, *, dispute_pk: int, event: str) -> None:
    try:
        services.dispute_notify(dispute_pk=dispute_pk, event=event)
    except MAIL_ERRORS as error:
        mail_retry(self, error, log="disputes.email_failed", dispute=dispute_pk)
