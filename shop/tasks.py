"""Thin Celery tasks: ids in, one service call, safe to run twice."""

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone
from django.utils.translation import gettext as _

from core.mail import MAIL_ERRORS, mail_retry, mail_send
from shop import services
from shop.models import Product


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


@shared_task(name="shop.kyc_documents_purge", acks_late=True)
def kyc_documents_purge_task() -> int:
    """Delete the KYC documents whose merchant was rejected KYC_REJECTED_RETENTION_DAYS ago (safe twice)."""
    return services.merchant_kyc_documents_purge(now=timezone.now())
