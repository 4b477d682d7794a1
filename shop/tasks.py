"""Thin Celery tasks: ids in, one service call, safe to run twice."""

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from core.mail import MAIL_ERRORS, mail_retry, mail_send
from shop import services
from shop.models import Product, WebhookEndpoint
from shop.services.webhooks import WEBHOOK_RETRY_DAYS


@shared_task(
    name="shop.stock_upload_process",
    acks_late=True,
    autoretry_for=(OperationalError,),
    max_retries=5,
    retry_backoff=True,
)
def stock_upload_process_task(*, upload_pk: int) -> None:
    # A retried or redelivered run resumes after the last committed batch (see the service).
    services.stock_upload_process(upload_pk=upload_pk, now=timezone.now())


@shared_task(name="shop.stock_uploads_resume", acks_late=True)
def stock_uploads_resume_task() -> list[int]:
    """Queue again the imports of running uploads that stopped moving (their worker was killed)."""
    return services.stock_uploads_resume_stalled(now=timezone.now())


@shared_task(name="shop.product_low_stock_email", bind=True, acks_late=True, max_retries=8)
def product_low_stock_email_task(self, *, product_pk: int, available: int) -> None:
    """Tell the merchant a product is running low (queued once per dip below the threshold)."""
    product = Product.objects.select_related("merchant__user").get(pk=product_pk)
    recipient = product.merchant.user.email
    if not recipient:
        return
    try:
        mail_send(
            event="product.low_stock",
            subject=_("Low stock: %(title)s") % {"title": product.title},
            body=_(
                "%(title)s has %(available)s keys left, below your threshold of %(threshold)s.\n\n"
                "Upload more stock in your merchant area. You get this e-mail once each time stock falls "
                "below the threshold."
            )
            % {"title": product.title, "available": available, "threshold": product.low_stock_threshold},
            to=[recipient],
        )
    except MAIL_ERRORS as error:
        mail_retry(self, error, log="shop.email_failed", product=product_pk)


# --- webhooks to merchants (shop/services/webhooks.py) ----------------------------------------------


@shared_task(name="shop.webhook_deliver", acks_late=True)
def webhook_deliver_task(*, delivery_pk: int) -> None:
    # One attempt; a failure is scheduled by the service and re-queued by the sweeper, not retried here.
    services.webhook_delivery_attempt(delivery_pk=delivery_pk, now=timezone.now())


@shared_task(name="shop.webhook_deliveries_sweep", acks_late=True)
def webhook_deliveries_sweep_task() -> int:
    """Queue every delivery that is due: retries on their schedule, and sends lost with the broker."""
    pks = services.webhook_deliveries_due(now=timezone.now())
    for pk in pks:
        webhook_deliver_task.delay(delivery_pk=pk)
    return len(pks)


@shared_task(name="shop.webhook_endpoint_disabled_email", bind=True, acks_late=True, max_retries=8)
def webhook_endpoint_disabled_email_task(self, *, endpoint_pk: int) -> None:
    """Tell the merchant one of their endpoints failed for days and was disabled."""
    endpoint = WebhookEndpoint.objects.select_related("merchant__user").filter(pk=endpoint_pk).first()
    if endpoint is None or not endpoint.merchant.user.email:
        return
    user = endpoint.merchant.user
    with translation.override(user.language or settings.LANGUAGE_CODE):
        subject = _("Webhook endpoint disabled: %(url)s") % {"url": endpoint.url}
        body = _(
            "Every attempt to deliver events to %(url)s failed for %(days)s days, so we disabled it.\n\n"
            "Check that it answers 2xx to a signed POST, then enable it again and resend the events you "
            "still need from its delivery log in your merchant area."
        ) % {"url": endpoint.url, "days": WEBHOOK_RETRY_DAYS}
    try:
        mail_send(event="webhook.endpoint_disabled", subject=subject, body=body, to=[user.email])
    except MAIL_ERRORS as error:
        mail_retry(self, error, log="shop.email_failed", endpoint=endpoint_pk)


@shared_task(name="shop.kyc_documents_purge", acks_late=True)
def kyc_documents_purge_task() -> int:
    """Delete the KYC documents whose merchant was rejected KYC_REJECTED_RETENTION_DAYS ago (safe twice)."""
    return services.merchant_kyc_documents_purge(now=timezone.now())
