"""Issue 7: order links are always mailed: subjects are one line, and a failed send is retried and logged."""

import logging
import re
import socket
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from config.celery import app as celery_app
from escrow.notifications import orders_link_email_due
from escrow.tasks import order_link_email_task
from shop import services as shop_services
from shop.models import Product
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_title_with_line_breaks_still_mails_the_order_link_with_a_clean_subject(run_on_commit):
    product = factories.product_create(stock=1)
    # A title saved before titles were kept to one line (the service and form now refuse these).
    Product.objects.filter(pk=product.pk).update(title="Game card\r\nBcc: victim@example.com\n\u2028 50 CNY")
    mail.outbox.clear()
    with run_on_commit():
        placed = factories.order_place(product=product, email="buyer@example.com")
    assert mail.outbox == []  # the link goes a minute later, to an order not delivered by then
    assert orders_link_email_due(now=timezone.now() + timedelta(minutes=2)) == 1
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.subject == f"Your order {placed.order.pk}: Game card Bcc: victim@example.com 50 CNY"
    message = sent.message()
    assert message["Subject"] == sent.subject
    assert message["X-Shop-Event"] == "order.placed"
    assert message["Bcc"] is None
    assert sent.recipients() == ["buyer@example.com"]
    [link] = re.findall(rf"https?://\S+/orders/{placed.order.pk}/t/\S+/", sent.body)
    assert Client().get(urlsplit(link).path).status_code == 200  # a signed link: it opens the order


def _closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once, like an SMTP server that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_failed_send_is_retried_with_back_off_and_logged_each_time(settings, caplog):
    order = factories.order_place(product=factories.product_create(stock=1)).order
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", _closed_port(), 5
    caplog.set_level(logging.WARNING)

    # Eager runs chain their retries at once (no waiting) only when failures are returned, not raised.
    celery_app.conf.task_eager_propagates = False
    result = order_link_email_task.apply(kwargs={"order_pk": order.pk, "link": "https://shop.example/secret-token"})
    assert result.state == "FAILURE"
    assert isinstance(result.result, ConnectionRefusedError)

    failures = [record for record in caplog.records if record.getMessage() == "escrow.email_failed"]
    assert len(failures) == order_link_email_task.max_retries + 1
    assert {record.order for record in failures} == {order.pk}
    assert [record.attempt for record in failures] == list(range(1, order_link_email_task.max_retries + 2))
    assert [record.retry_in for record in failures][:3] == [30, 60, 120]
    assert all("secret-token" not in str(record.__dict__) for record in failures)  # the link is the buyer's key


def test_a_title_with_a_line_break_is_refused_by_the_service_and_changes_nothing():
    product = factories.product_create(stock=0, title="One line")
    with pytest.raises(shop_services.ShopError) as refused:
        shop_services.product_create(
            merchant=product.merchant, title="Two\nlines", price=100, currency="CNY", now=timezone.now()
        )
    assert refused.value.code == "bad_title"
    with pytest.raises(shop_services.ShopError):
        shop_services.product_update(product=product, actor=None, now=timezone.now(), title="Two\r\nlines")
    assert list(Product.objects.values_list("title", flat=True)) == ["One line"]


def test_the_product_form_shows_an_error_for_a_title_with_a_line_break():
    merchant = factories.merchant_create()
    client = Client()
    factories.login_verified(client, merchant.user)
    response = client.post(
        "/merchant/products/new/",
        {
            "title": "Gift card\r\nBcc: someone@example.com",
            "price": "12.50",
            "currency": "USD",
            "inspection_hours": 48,
            "max_per_order": 3,
            "low_stock_threshold": 5,
        },
    )
    assert response.status_code == 200
    assert "one line" in response.text
    assert not Product.objects.filter(merchant=merchant).exists()


def test_every_kind_of_mail_names_its_event(run_on_commit):
    from accounts.services import alert_raise

    factories.user_create(is_staff=True)
    product = factories.product_create(stock=2, low_stock_threshold=2)
    mail.outbox.clear()
    with run_on_commit():
        placed = factories.order_place(product=product)
    with run_on_commit():
        factories.pay(placed.order)
    factories.order_place(product=product, email="unpaid@example.com")  # never paid: its link is mailed
    assert orders_link_email_due(now=timezone.now() + timedelta(minutes=2)) == 1
    with run_on_commit():
        alert_raise(key="test:1", kind="reconciliation", message="A difference.", now=timezone.now())
    events = sorted(sent.message()["X-Shop-Event"] for sent in mail.outbox)
    assert events == ["alert.raised", "order.delivered", "order.paid", "order.placed", "product.low_stock"]
