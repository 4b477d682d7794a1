"""Thin Celery tasks: ids in, one service call, safe to run twice."""

from celery import shared_task
from django.utils import timezone

from core.mail import MAIL_ERRORS, mail_retry
from escrow import delivery, ledger_checks, notifications, reconciliation, refunds, services, withdrawals
from escrow.gateways.sandbox.tasks import sandbox_refund_webhook_send_task  # noqa: F401  (registers it)


@shared_task(name="escrow.deliver_order", acks_late=True, autoretry_for=(ConnectionError,), max_retries=5)
def order_deliver_task(*, order_pk: int) -> None:
    services.order_deliver(order_pk=order_pk, now=timezone.now())


@shared_task(name="escrow.orders_deliver_stuck", acks_late=True)
def orders_deliver_stuck_task() -> int:
    """Deliver the paid orders whose delivery task was lost (broker down, worker killed, …)."""
    return delivery.orders_deliver_stuck(now=timezone.now())


@shared_task(name="escrow.ledger_verify", acks_late=True)
def ledger_verify_task() -> int:
    """Check the ledger's invariants; the result goes to /metrics. Returns how many failed."""
    return len(ledger_checks.ledger_verify_record(now=timezone.now()))


@shared_task(name="escrow.orders_expire", acks_late=True)
def orders_expire_task() -> int:
    return services.orders_expire_due(now=timezone.now())


@shared_task(name="escrow.orders_release", acks_late=True)
def orders_release_task() -> int:
    return services.orders_release_due(now=timezone.now())


@shared_task(name="escrow.reserves_release", acks_late=True)
def reserves_release_task() -> int:
    return services.reserves_release_due(now=timezone.now())


@shared_task(name="escrow.refund_submit", acks_late=True, autoretry_for=(ConnectionError,), max_retries=8)
def refund_submit_task(*, refund_pk: int) -> None:
    refunds.refund_submit(refund_pk=refund_pk, now=timezone.now())


@shared_task(name="escrow.withdrawal_requested_notify", bind=True, acks_late=True, max_retries=8)
def withdrawal_requested_notify_task(self, *, withdrawal_pk: int) -> None:
    try:
        withdrawals.withdrawal_requested_notify(withdrawal_pk=withdrawal_pk)
    except MAIL_ERRORS as error:
        mail_retry(self, error, log="escrow.email_failed", withdrawal=withdrawal_pk)


@shared_task(name="escrow.reconcile_gateways", acks_late=True)
def reconcile_gateways_task() -> int:
    """Yesterday (UTC) against each gateway's books; alerts are raised once per difference."""
    return reconciliation.reconcile_day(now=timezone.now())


@shared_task(name="escrow.orders_link_email", acks_late=True)
def orders_link_email_task() -> int:
    """The link e-mail to the orders placed a minute ago and still without their keys (one batch)."""
    return notifications.orders_link_email_due(now=timezone.now())


@shared_task(name="escrow.order_link_email", bind=True, acks_late=True, max_retries=8)
def order_link_email_task(self, *, order_pk: int, link: str) -> None:
    """Send the buyer the link to their order with `link` (the checkout's own token). The checkout no
    longer queues it (the beat's `orders_link_email_task` mails the link to the orders not delivered a
    minute later); kept for the tasks queued before that, and for a caller holding the token."""
    try:
        notifications.order_email(order_pk=order_pk, event="placed", link=link)
    except MAIL_ERRORS as error:
        mail_retry(self, error, log="escrow.email_failed", order=order_pk)  # never the link: it is the key


@shared_task(name="escrow.order_paid_notify", bind=True, acks_late=True, max_retries=8)
def order_paid_notify_task(self, *, order_pk: int) -> None:
    """The merchant hears of a new paid order (e-mail and inbox), unless they switched it off."""
    try:
        notifications.order_paid_notify(order_pk=order_pk)
    except MAIL_ERRORS as error:
        mail_retry(self, error, log="escrow.email_failed", order=order_pk)


@shared_task(name="escrow.order_email", bind=True, acks_late=True, max_retries=8)
def order_email_task(self, *, order_pk: int, event: str) -> None:
    """One of the buyer's e-mails about their order (escrow/notifications.py), with a fresh signed link."""
    try:
        notifications.order_email(order_pk=order_pk, event=event)
    except MAIL_ERRORS as error:
        mail_retry(self, error, log="escrow.email_failed", order=order_pk, event=event)
