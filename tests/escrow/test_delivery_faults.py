"""A paid order is delivered exactly once whatever fails on the way: real processes, real faults.

Each test runs its own `redis-server` (on a free port, saving nothing, so a kill loses what it held)
and a real `celery -A config worker --beat` on pytest-django's test database, breaks something the
way production breaks (`kill -9` of the worker, Redis stopped or killed, a PostgreSQL backend
terminated), brings it back, and checks the books: every paid order delivered, each exactly once.
The beat's delivery sweeper runs every second here (ESCROW_DELIVERY_SWEEP_SECONDS) and picks up
orders paid more than a second ago (ESCROW_DELIVERY_GRACE_SECONDS).

Each fault prints one line of figures (`pytest -s tests/escrow/test_delivery_faults.py | grep FAULT`):
orders paid and not yet delivered when the fault hit (in flight), orders never delivered (lost),
delivered twice (doubled), and seconds from the fault's end to the last delivery (recovery).
docs/reliability.md records them.
"""

import contextlib
import time
from collections import Counter
from collections.abc import Iterator

import psycopg2
import pytest
from django.db import connection
from django.test import Client

from accounts.models import AuditEntry
from escrow.ledger_checks import ledger_problems
from escrow.models import Order, OrderStatus, Payment, PaymentStatus
from shop.models import CardKey, CardKeyStatus, Product
from tests import factories
from tests.conftest import requires_postgres
from tests.locks import backend_waiting_for_a_lock
from tests.processes import (
    RedisServer,
    beat_running,
    free_port,
    publishing_to,
    redis_server,
    requires_redis_server,
    test_database_url,
    wait_for,
    worker_running,
)

pytestmark = [
    pytest.mark.celery_worker,
    requires_postgres,
    requires_redis_server,
    pytest.mark.django_db(transaction=True),
]

# A killed worker's embedded beat keeps the beat lease (config/beat.py) until it lapses: 3 s here.
SWEEPER_FAST = {"ESCROW_DELIVERY_SWEEP_SECONDS": "1", "ESCROW_DELIVERY_GRACE_SECONDS": "1", "BEAT_LEASE_SECONDS": "3"}
RECOVERY_SECONDS = 40


@pytest.fixture
def broker(_fast_and_local, tmp_path) -> Iterator[RedisServer]:
    """This test's own Redis; this process publishes its tasks there (not eagerly)."""
    with redis_server(tmp_path) as server, publishing_to(server.url()):
        yield server


def _worker(server: RedisServer, tmp_path, name: str = "worker"):
    return worker_running(broker_url=server.url(), log=tmp_path / f"{name}.log", beat=True, env=SWEEPER_FAST)


def _orders_placed(count: int, *, quantity: int = 1) -> tuple[Product, list[Order]]:
    product = factories.product_create(stock=count * quantity + 1, price=1500)
    return product, [factories.order_place(product=product, quantity=quantity).order for _ in range(count)]


def _pay(order: Order) -> None:
    response = factories.pay(order, client=Client())
    assert (response.status_code, response.json()) == (200, {"result": "processed"})


@contextlib.contextmanager
def _keys_locked(order: Order) -> Iterator[None]:
    """Hold the order's key rows locked from another connection: its payment goes through (it does
    not touch them), but a delivery, which sells them, waits mid-task, holding the order's lock."""
    with contextlib.closing(psycopg2.connect(test_database_url())) as other:
        with other.cursor() as cursor:
            cursor.execute("SELECT 1 FROM shop_cardkey WHERE order_id = %s FOR UPDATE", [order.pk])
        yield
        other.rollback()


def _all_delivered(orders: list[Order]) -> bool:
    pks = [order.pk for order in orders]
    return Order.objects.filter(pk__in=pks, status=OrderStatus.DELIVERED).count() == len(pks)


def _wait_all_delivered(orders: list[Order], worker) -> None:
    undelivered = lambda: list(  # noqa: E731
        Order.objects.filter(pk__in=[o.pk for o in orders]).exclude(status=OrderStatus.DELIVERED).values("pk", "status")
    )
    wait_for(
        lambda: _all_delivered(orders),
        seconds=RECOVERY_SECONDS,
        what=f"every order delivered; still not: {undelivered()}\n{worker.log_tail()}",
    )


def _assert_each_delivered_once(product: Product, orders: list[Order], *, quantity: int = 1) -> None:
    """Every paid order delivered, each with exactly its own keys and one delivery; the books balance."""
    for order in orders:
        order.refresh_from_db()
        assert order.status == OrderStatus.DELIVERED
        assert order.payments.get().status == PaymentStatus.SUCCEEDED
        assert CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).count() == quantity
        assert AuditEntry.objects.filter(action="order.delivered", subject_id=str(order.pk)).count() == 1
    # A key belongs to one order by its foreign key; sold keys outside these orders would be a double sale.
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.SOLD).count() == len(orders) * quantity
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 1
    assert Order.objects.filter(status=OrderStatus.PAID).count() == 0
    assert ledger_problems() == []


def _in_flight(orders: list[Order]) -> int:
    return Order.objects.filter(pk__in=[o.pk for o in orders], status=OrderStatus.PAID).count()


def _figures(fault: str, orders: list[Order], *, in_flight: int, fault_over_at: float) -> None:
    """Print the fault's line of figures (before the assertions, so a failing run shows them too)."""
    recovery = time.monotonic() - fault_over_at
    deliveries = Counter(
        AuditEntry.objects.filter(action="order.delivered", subject_id__in=[str(o.pk) for o in orders]).values_list(
            "subject_id", flat=True
        )
    )
    lost = sum(1 for o in orders if deliveries[str(o.pk)] == 0)
    doubled = sum(1 for count in deliveries.values() if count > 1)
    print(
        f"\nFAULT {fault}: orders {len(orders)}, in flight {in_flight}, lost {lost}, doubled {doubled}, "
        f"recovery {recovery:.1f} s"
    )


def test_worker_killed_mid_batch(broker, tmp_path):
    """`kill -9` of the worker while it holds deliveries: acks_late leaves them unacknowledged in
    Redis for its visibility timeout (an hour); the next worker's sweeper delivers them now."""
    product, orders = _orders_placed(10)
    with _worker(broker, tmp_path, "first") as first:
        with _keys_locked(orders[0]):
            for order in orders:
                _pay(order)
            wait_for(backend_waiting_for_a_lock, seconds=20, what=f"a delivery in progress\n{first.log_tail()}")
            first.stop(kill=True)
            in_flight, killed_at = _in_flight(orders), time.monotonic()
        assert Order.objects.get(pk=orders[0].pk).status == OrderStatus.PAID

    with _worker(broker, tmp_path, "second") as second:
        _wait_all_delivered(orders, second)
    _figures("worker kill -9 (new worker started)", orders, in_flight=in_flight, fault_over_at=killed_at)
    _assert_each_delivered_once(product, orders)


def test_webhooks_while_redis_is_stopped(broker, tmp_path):
    """Redis stopped while payments arrive: each webhook answers 200 and books its payment at once;
    once Redis is back, the same worker (still running) delivers every order."""
    product, orders = _orders_placed(6)
    with _worker(broker, tmp_path) as worker:
        broker.stop()
        stopped = time.monotonic()
        for order in orders:
            started = time.monotonic()
            _pay(order)
            assert time.monotonic() - started < 5, "a webhook must not wait long for a broker that is down"
            assert order.payments.get().status == PaymentStatus.SUCCEEDED
        assert Order.objects.filter(pk__in=[o.pk for o in orders], status=OrderStatus.PAID).count() == len(orders)
        time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))  # the outage lasts ten seconds, as in the issue
        in_flight = _in_flight(orders)
        broker.start()
        restarted = time.monotonic()

        _wait_all_delivered(orders, worker)
        assert worker.is_alive(), worker.log_tail()
    _figures("Redis stopped 10 s while paying", orders, in_flight=in_flight, fault_over_at=restarted)
    _assert_each_delivered_once(product, orders)


def test_redis_killed_without_persistence(broker, tmp_path):
    """Deliveries queued while no worker runs vanish with a Redis killed without persistence; the
    sweeper finds the paid orders in PostgreSQL and delivers them."""
    product, orders = _orders_placed(5, quantity=2)
    for order in orders:
        _pay(order)
    broker.stop(kill=True)
    broker.start()
    in_flight, restarted = _in_flight(orders), time.monotonic()

    with _worker(broker, tmp_path) as worker:
        _wait_all_delivered(orders, worker)
    _figures("Redis killed, queue lost", orders, in_flight=in_flight, fault_over_at=restarted)
    _assert_each_delivered_once(product, orders, quantity=2)


def test_worker_survives_redis_restarting_mid_task(broker, tmp_path):
    """Redis restarts while a delivery runs: the worker reconnects (it used to exit with
    "Unrecoverable error: AttributeError ... 'hostname'") and keeps delivering what comes after."""
    product, orders = _orders_placed(3)
    with _worker(broker, tmp_path) as worker:
        with _keys_locked(orders[0]):
            _pay(orders[0])
            wait_for(backend_waiting_for_a_lock, seconds=20, what=f"a delivery in progress\n{worker.log_tail()}")
            broker.stop(kill=True)
            broker.start()
            in_flight, restarted = _in_flight(orders), time.monotonic()
        wait_for(lambda: _all_delivered(orders[:1]), seconds=RECOVERY_SECONDS, what="the first delivery")
        for order in orders[1:]:
            _pay(order)
        _wait_all_delivered(orders, worker)
        assert worker.is_alive(), worker.log_tail()
        assert "Unrecoverable error" not in worker.log.read_text()
    _figures("Redis restarted mid-task", orders, in_flight=in_flight, fault_over_at=restarted)
    _assert_each_delivered_once(product, orders)


def test_worker_database_connection_terminated_mid_delivery(broker, tmp_path):
    """PostgreSQL terminates the worker's backend while it delivers: the task fails, the order is still
    paid, and the sweeper delivers it; the worker goes on with fresh connections."""
    product, orders = _orders_placed(4)
    with _worker(broker, tmp_path) as worker:
        with _keys_locked(orders[0]):
            _pay(orders[0])
            backend = wait_for(
                backend_waiting_for_a_lock, seconds=20, what=f"a delivery in progress\n{worker.log_tail()}"
            )
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
            in_flight, terminated = _in_flight(orders), time.monotonic()
        for order in orders[1:]:
            _pay(order)
        _wait_all_delivered(orders, worker)
        assert worker.is_alive(), worker.log_tail()
    _figures("PostgreSQL backend terminated mid-delivery", orders, in_flight=in_flight, fault_over_at=terminated)
    _assert_each_delivered_once(product, orders)
    assert Payment.objects.filter(order__in=orders, status=PaymentStatus.SUCCEEDED).count() == len(orders)


def _worker_backends() -> set[int]:
    """PostgreSQL backends (pids) connected to the test database other than this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in cursor.fetchall()}


def test_worker_keeps_its_database_connection_between_tasks(broker, tmp_path):
    """The worker's processes keep their PostgreSQL connection from one task to the next (health-checked
    and recycled after CONN_MAX_AGE) instead of opening one per task: after each delivery a worker
    backend is still connected, and six deliveries in a row use no more backends than worker processes."""
    product, orders = _orders_placed(6)
    earlier = _worker_backends()  # an earlier test's process may still be closing its connection
    seen: set[int] = set()
    with worker_running(broker_url=broker.url(), log=tmp_path / "worker.log") as worker:
        for done, order in enumerate(orders, 1):
            _pay(order)
            wait_for(
                lambda done=done: worker.deliveries_run() == done,
                seconds=20,
                what=f"delivery {done}\n{worker.log_tail()}",
            )
            backends = _worker_backends() - earlier
            assert backends, "the worker closed its connection after the task"
            seen |= backends
        assert len(seen) <= 2, f"{len(seen)} backends for 6 deliveries on 2 worker processes: {sorted(seen)}"
    _assert_each_delivered_once(product, orders)


def test_beat_started_twice_sends_once_and_fails_over(broker, tmp_path):
    """Two `celery beat` processes on one deployment: only the lease holder sends periodic tasks (the
    other stays a standby and sends nothing); `kill -9` of the holder and the standby takes over within
    the lease (3 s here) and its sweeper delivers what was paid meanwhile. Payments here cannot queue
    their delivery (the web's broker address is dead), so only the beat's sweeper delivers."""
    product, orders = _orders_placed(8)
    beat_env = SWEEPER_FAST
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    with (
        worker_running(broker_url=broker.url(), log=tmp_path / "worker.log") as worker,
        beat_running(broker_url=broker.url(), log=tmp_path / "beat-a.log", env=beat_env) as beat_a,
        beat_running(broker_url=broker.url(), log=tmp_path / "beat-b.log", env=beat_env) as beat_b,
    ):
        sweep = "escrow.orders_deliver_stuck"
        wait_for(lambda: beat_a.sent(sweep) + beat_b.sent(sweep) >= 3, seconds=20, what="three sweeps sent")
        leader, standby = (beat_a, beat_b) if beat_a.sent(sweep) else (beat_b, beat_a)
        assert standby.sent(sweep) == 0, "both beats are sending"

        with publishing_to(dead_broker):
            for order in orders[:4]:
                _pay(order)
        _wait_all_delivered(orders[:4], worker)
        assert standby.sent(sweep) == 0, "both beats are sending"

        leader.stop(kill=True)
        killed_at = time.monotonic()
        with publishing_to(dead_broker):
            for order in orders[4:]:
                _pay(order)
        in_flight = _in_flight(orders)
        _wait_all_delivered(orders, worker)
        assert standby.sent(sweep) > 0
        assert "beat.lease_taken" in standby.log_text()
    _figures("beat started twice, the leader killed", orders, in_flight=in_flight, fault_over_at=killed_at)
    _assert_each_delivered_once(product, orders)
