"""Delivery in a real `celery -A config worker` process, on a Redis broker, against PostgreSQL.

The rest of the suite runs Celery eagerly (tests/conftest.py). Here the test process publishes to
Redis and a worker subprocess, pointed at pytest-django's test database, does the delivery; the test
only watches the database. The Redis database used (TEST_CELERY_BROKER_URL, default db 15) is
flushed before the worker starts, so do not point it at one that holds anything you want to keep.
"""

import os
from collections.abc import Iterator

import pytest
import redis
from django.test import Client

from accounts.models import AuditEntry
from config.celery import app as celery_app
from escrow.ledger_checks import ledger_problems
from escrow.models import KeyReveal, Order, OrderStatus, WebhookEvent
from escrow.tasks import order_deliver_task
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres
from tests.processes import Worker, publishing_to, wait_for

BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
DELIVERY_SECONDS = 20


def _redis_unreachable() -> bool:
    try:
        redis.Redis.from_url(BROKER_URL, socket_connect_timeout=1, socket_timeout=1).ping()
    except (redis.RedisError, OSError):
        return True
    return False


requires_redis = pytest.mark.skipif(
    _redis_unreachable(), reason=f"needs Redis at {BROKER_URL} (set TEST_CELERY_BROKER_URL to another one)"
)

pytestmark = [
    pytest.mark.celery_worker,
    requires_postgres,
    requires_redis,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Worker]:
    """A `celery -A config worker` subprocess on the Redis broker and pytest-django's test database."""
    redis.Redis.from_url(BROKER_URL).flushdb()
    worker = Worker(broker_url=BROKER_URL, log=tmp_path_factory.mktemp("celery") / "worker.log")
    try:
        with django_db_blocker.unblock():
            worker.start()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def on_real_broker(_fast_and_local, celery_worker) -> Iterator[Worker]:
    """Publish this test's tasks to the worker's Redis broker instead of running them in-process.

    Depends on `_fast_and_local`, which makes Celery eager before every test, so it runs after it.
    """
    with publishing_to(BROKER_URL):
        yield celery_worker


def _delivered(order_pk: int) -> Order | None:
    order = Order.objects.get(pk=order_pk)
    return order if order.status == OrderStatus.DELIVERED else None


def _assert_delivered_once(order: Order, quantity: int) -> None:
    assert order.delivered_at is not None
    assert order.inspection_ends_at is not None
    assert CardKey.objects.filter(order=order).count() == quantity
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).count() == quantity
    assert AuditEntry.objects.filter(action="order.delivered", subject_id=str(order.pk)).count() == 1
    assert KeyReveal.objects.filter(order=order).count() == 0


def test_the_worker_delivers_a_paid_order_once(on_real_broker):
    worker = on_real_broker
    product = factories.product_create(stock=3, price=2500)
    order = factories.order_place(product=product, quantity=2).order
    assert celery_app.conf.task_always_eager is False
    runs_before = worker.deliveries_run()

    response = factories.pay(order, client=Client())

    assert response.status_code == 200
    assert response.json() == {"result": "processed"}
    delivered = wait_for(lambda: _delivered(order.pk), seconds=DELIVERY_SECONDS, what=f"order {order.pk} delivered")
    _assert_delivered_once(delivered, quantity=2)
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 1
    assert WebhookEvent.objects.filter(payment__order=order).count() == 1
    # It was the worker that delivered, not this process.
    assert worker.deliveries_run() == runs_before + 1
    assert ledger_problems() == []


def test_the_worker_runs_a_repeated_delivery_as_a_no_op(on_real_broker):
    worker = on_real_broker
    order = factories.order_place(product=factories.product_create(stock=2), quantity=1).order
    factories.pay(order, client=Client())
    delivered = wait_for(lambda: _delivered(order.pk), seconds=DELIVERY_SECONDS, what=f"order {order.pk} delivered")
    runs_before = worker.deliveries_run()

    # A redelivered message (acks_late after a lost worker) or a second enqueue runs the task again.
    order_deliver_task.delay(order_pk=order.pk)
    wait_for(lambda: worker.deliveries_run() == runs_before + 1, seconds=DELIVERY_SECONDS, what="the second run")

    again = Order.objects.get(pk=order.pk)
    assert (again.status, again.delivered_at) == (OrderStatus.DELIVERED, delivered.delivered_at)
    _assert_delivered_once(again, quantity=1)
    assert ledger_problems() == []
