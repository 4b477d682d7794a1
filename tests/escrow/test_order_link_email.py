"""The link to an order, e-mailed by the beat to the buyers whose order has no keys a minute after
checkout (issue 9: no e-mail task per purchase at checkout; a buyer who pays in time gets the link in
the "keys ready" e-mail)."""

import threading
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from config.celery import app as celery_app
from escrow import notifications, tasks
from escrow.models import Order
from tests import factories
from tests.conftest import requires_postgres


def _links_to(order_pk: int, sent) -> list[str]:
    return [word for word in sent.body.split() if f"/orders/{order_pk}/t/" in word]


@pytest.mark.django_db
def test_an_unpaid_order_is_mailed_its_link_once_after_the_delay(settings, run_on_commit):
    settings.ORDER_LINK_EMAIL_DELAY_SECONDS = 60
    with run_on_commit():
        placed = factories.order_place(product=factories.product_create(stock=1), email="late@example.com")
    mail.outbox.clear()
    placed_at = placed.order.created_at

    assert notifications.orders_link_email_due(now=placed_at + timedelta(seconds=59)) == 0
    assert mail.outbox == []
    assert notifications.orders_link_email_due(now=placed_at + timedelta(seconds=61)) == 1
    [sent] = mail.outbox
    assert sent.to == ["late@example.com"] and sent.extra_headers["X-Shop-Event"] == "order.placed"
    [link] = _links_to(placed.order.pk, sent)
    assert Client().get(urlsplit(link).path).status_code == 200
    assert Order.objects.get(pk=placed.order.pk).link_emailed_at == placed_at + timedelta(seconds=61)

    assert notifications.orders_link_email_due(now=placed_at + timedelta(minutes=10)) == 0  # never twice
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_the_delay_is_a_setting(settings):
    settings.ORDER_LINK_EMAIL_DELAY_SECONDS = 300
    order = factories.order_place(product=factories.product_create(stock=1)).order
    assert notifications.orders_link_email_due(now=order.created_at + timedelta(minutes=4)) == 0
    assert notifications.orders_link_email_due(now=order.created_at + timedelta(minutes=6)) == 1


@pytest.mark.django_db
def test_a_buyer_who_paid_in_time_gets_the_link_only_with_the_keys(run_on_commit):
    buyer = factories.user_create(email="signed-in@example.com")
    with run_on_commit():
        placed = factories.order_place(product=factories.product_create(stock=1), email=buyer.email, buyer=buyer)
    assert mail.outbox == []  # nothing queued at checkout
    with run_on_commit():
        factories.pay(placed.order)
    assert notifications.orders_link_email_due(now=timezone.now() + timedelta(minutes=5)) == 0
    buyer_mail = [sent for sent in mail.outbox if sent.to == [buyer.email]]
    assert [sent.extra_headers["X-Shop-Event"] for sent in buyer_mail] == ["order.delivered"]
    [link] = _links_to(placed.order.pk, buyer_mail[0])
    assert Client().get(urlsplit(link).path).status_code == 200


@pytest.mark.django_db
def test_a_signed_in_buyer_who_has_not_paid_is_mailed_too():
    buyer = factories.user_create(email="member@example.com")
    order = factories.order_place(product=factories.product_create(stock=1), email=buyer.email, buyer=buyer).order
    assert notifications.orders_link_email_due(now=timezone.now() + timedelta(minutes=2)) == 1
    assert [sent.to for sent in mail.outbox] == [[buyer.email]] and _links_to(order.pk, mail.outbox[0])


@pytest.mark.django_db
def test_a_failed_send_is_left_to_a_retrying_task_and_not_claimed_again(monkeypatch):
    order = factories.order_place(product=factories.product_create(stock=1)).order
    queued = []
    monkeypatch.setattr(tasks.order_email_task, "delay", lambda **kwargs: queued.append(kwargs))

    def smtp_down(**kwargs):
        raise ConnectionRefusedError("SMTP is down")

    monkeypatch.setattr(notifications, "order_email", smtp_down)
    assert notifications.orders_link_email_due(now=timezone.now() + timedelta(minutes=2)) == 1
    assert queued == [{"order_pk": order.pk, "event": "placed"}]
    assert notifications.orders_link_email_due(now=timezone.now() + timedelta(minutes=3)) == 0


@pytest.mark.django_db
def test_the_beat_task_runs_the_batch(settings):
    settings.ORDER_LINK_EMAIL_DELAY_SECONDS = 0
    factories.order_place(product=factories.product_create(stock=1))
    assert tasks.orders_link_email_task.apply().get() == 1
    assert "escrow.orders_link_email" in {entry["task"] for entry in celery_app.conf.beat_schedule.values()}


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_mail_each_order_once(settings):
    from django.db import connection

    settings.ORDER_LINK_EMAIL_DELAY_SECONDS = 0
    product = factories.product_create(stock=12)
    orders = [factories.order_place(product=product, email=f"b{i}@example.com").order for i in range(12)]
    mail.outbox.clear()
    barrier = threading.Barrier(2)
    claimed = []

    def sweep() -> None:
        try:
            barrier.wait()
            claimed.append(notifications.orders_link_email_due(now=timezone.now(), batch=7))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    claimed.append(notifications.orders_link_email_due(now=timezone.now()))  # whatever the two left
    assert sum(claimed) == 12
    assert sorted(sent.to[0] for sent in mail.outbox) == sorted(order.email for order in orders)


class StuckEmailBackend:
    """An SMTP server that accepts the connection and never answers: says so in the file
    $STUCK_MAIL_SIGNAL, then hangs (for test_a_worker_killed_mid_send_leaves_the_order_to_the_next_sweep)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def send_messages(self, messages) -> int:
        import os
        import time
        from pathlib import Path

        Path(os.environ["STUCK_MAIL_SIGNAL"]).write_text("sending")
        time.sleep(120)
        return 0


SWEEP_IN_A_PROCESS = """
import django
django.setup()
from django.utils import timezone
from escrow.notifications import orders_link_email_due
orders_link_email_due(now=timezone.now())
"""


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_send_leaves_the_order_to_the_next_sweep(settings, tmp_path):
    """A real process claims the order and is killed (SIGKILL) while its e-mail is being sent: nothing
    was committed, so the next sweep mails the link (was: claimed first, committed, and lost)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.processes import REPO_ROOT, test_database_url, wait_for

    settings.ORDER_LINK_EMAIL_DELAY_SECONDS = 0
    order = factories.order_place(product=factories.product_create(stock=1), email="slow@example.com").order
    mail.outbox.clear()
    signal_file = tmp_path / "sending"
    sweeper = subprocess.Popen(
        [sys.executable, "-c", SWEEP_IN_A_PROCESS],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": test_database_url(),
            "EMAIL_BACKEND": f"{__name__}.StuckEmailBackend",
            "STUCK_MAIL_SIGNAL": str(signal_file),
            "ORDER_LINK_EMAIL_DELAY_SECONDS": "0",
        },
    )
    try:
        wait_for(signal_file.exists, seconds=60, what="the sweeping process to start sending")
    finally:
        sweeper.send_signal(signal.SIGKILL)
        sweeper.wait(timeout=30)
    assert notifications.orders_link_email_due(now=timezone.now()) == 1
    assert [sent.to for sent in mail.outbox] == [["slow@example.com"]]
    assert Order.objects.get(pk=order.pk).link_emailed_at is not None
