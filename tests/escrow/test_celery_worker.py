"""Delivery in a real `celery -A config worker` process, on a Redis broker, against PostgreSQL.

The rest of the suite runs Celery eagerly (tests/conftest.py). Here the test process publishes to
Redis and a worker subprocess, pointed at pytest-django's test database, does the delivery; the test
only watches the database. The Redis database used (TEST_CELERY_BROKER_URL, default db 15) is
flushed before the worker starts, so do not point it at one that holds anything you want to keep.
"""

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from django.db import connection
from django.test import Client

from accounts.models import AuditEntry
from config.celery import app as celery_app
from escrow.ledger_checks import ledger_problems
from escrow.models import KeyReveal, Order, OrderStatus, WebhookEvent
from escrow.tasks import order_deliver_task
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY_BIN = REPO_ROOT / ".venv" / "bin" / "celery"
BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
WORKER_START_SECONDS = 30
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


def _wait_for(check: Callable[[], object], *, seconds: float, what: str, interval: float = 0.05):
    """Poll `check` until it returns something truthy, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {seconds} s waiting for {what}.")
        time.sleep(interval)


def _test_database_url() -> str:
    """A URL for the database pytest-django created (test_<name>), for the worker subprocess."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"


class Worker:
    def __init__(self, *, name: str, log: Path):
        self.name = name
        self.log = log
        # A separate app for remote control, so the shop's own app keeps its configuration.
        self.control_app = Celery("worker-probe", broker=BROKER_URL, set_as_current=False)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _inspect(self):
        return self.control_app.control.inspect(destination=[self.name], timeout=1.0)

    def _deliveries_if_idle(self) -> int | None:
        stats = (self._inspect().stats() or {}).get(self.name)
        active = (self._inspect().active() or {}).get(self.name)
        if stats is None or active is None or active:
            return None
        return stats.get("total", {}).get(order_deliver_task.name, 0)

    def deliveries_run(self, *, seconds: float = 10) -> int:
        """How many `escrow.deliver_order` tasks the worker has run, once it has nothing running."""
        deadline = time.monotonic() + seconds
        while (count := self._deliveries_if_idle()) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"The worker stayed busy for {seconds} s:\n{self.log_tail()}")
            time.sleep(0.05)
        return count


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Worker]:
    """A `celery -A config worker` subprocess on the Redis broker and pytest-django's test database."""
    redis.Redis.from_url(BROKER_URL).flushdb()
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    worker = Worker(name=f"test-{uuid.uuid4().hex[:8]}@localhost", log=tmp_path_factory.mktemp("celery") / "worker.log")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    command = [str(CELERY_BIN), "-A", "config", "worker", "--pool=prefork", "--concurrency=2", "-l", "warning"]
    command += ["-n", worker.name, "--without-heartbeat", "--without-gossip", "--without-mingle"]
    with worker.log.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + WORKER_START_SECONDS
        while not worker.control_app.control.ping(destination=[worker.name], timeout=0.5):
            if process.poll() is not None:
                pytest.fail(f"The Celery worker exited with {process.returncode}:\n{worker.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"No answer to a ping from the worker in {WORKER_START_SECONDS} s:\n{worker.log_tail()}")
        yield worker
    finally:
        _stop(process)
        worker.control_app.close()


def _stop(process: subprocess.Popen) -> None:
    """Warm shutdown of the worker's whole process group (main process and its pool children)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    # Pool children that outlived their parent would keep connections to the test database open.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _reset_broker_connections() -> None:
    # The app caches its connection and producer pools on first use; drop them so the next publish
    # connects to the broker now configured (what Celery itself does after a fork). They are not
    # closed: kombu keeps them in a global registry that would hand the closed pool back.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def on_real_broker(_fast_and_local, celery_worker) -> Iterator[Worker]:
    """Publish this test's tasks to the worker's Redis broker instead of running them in-process.

    Depends on `_fast_and_local`, which makes Celery eager before every test, so it runs after it.
    """
    conf = celery_app.conf
    saved = {name: conf[name] for name in ("task_always_eager", "broker_url", "broker_transport_options")}
    conf.update(task_always_eager=False, broker_url=BROKER_URL, broker_transport_options={})
    _reset_broker_connections()
    try:
        yield celery_worker
    finally:
        conf.update(saved)
        _reset_broker_connections()


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
    delivered = _wait_for(lambda: _delivered(order.pk), seconds=DELIVERY_SECONDS, what=f"order {order.pk} delivered")
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
    delivered = _wait_for(lambda: _delivered(order.pk), seconds=DELIVERY_SECONDS, what=f"order {order.pk} delivered")
    runs_before = worker.deliveries_run()

    # A redelivered message (acks_late after a lost worker) or a second enqueue runs the task again.
    order_deliver_task.delay(order_pk=order.pk)
    _wait_for(lambda: worker.deliveries_run() == runs_before + 1, seconds=DELIVERY_SECONDS, what="the second run")

    again = Order.objects.get(pk=order.pk)
    assert (again.status, again.delivered_at) == (OrderStatus.DELIVERED, delivered.delivered_at)
    _assert_delivered_once(again, quantity=1)
    assert ledger_problems() == []
