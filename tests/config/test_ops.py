"""The operations endpoints (/healthz, /readyz, /metrics) and JSON logs."""

import json
import os
import subprocess
import sys
import time

import pytest
import redis
from django.core.management import call_command
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from config import ops
from core import metrics
from escrow.tasks import order_deliver_task
from risk.models import Decision
from tests import factories
from tests.conftest import requires_postgres
from tests.processes import REPO_ROOT, Worker, publishing_to, redis_server, requires_redis_server, wait_for

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture(autouse=True)
def _fresh_metrics(settings):
    settings.CACHE_URL = ""
    metrics.metrics_reset_local()
    yield
    metrics.metrics_reset_local()


def test_healthz_answers_without_the_database_or_a_known_host(django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz", HTTP_HOST="10.0.0.7")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert response["Cache-Control"] == "no-store"


@requires_redis_server
def test_readyz_ok_then_503_naming_the_broker_when_redis_is_down(settings, tmp_path):
    with redis_server(tmp_path) as server:
        settings.CELERY_BROKER_URL = server.url()
        response = Client().get("/readyz", HTTP_HOST="10.0.0.7")
        assert response.status_code == 200, response.content
        assert response.json() == {
            "status": "ok",
            "checks": {"database": "ok", "migrations": "ok", "broker": "ok"},
        }
        server.stop(kill=True)
        response = Client().get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["failed"] == ["broker"]
    assert "onnect" in body["checks"]["broker"]  # the error says why


def test_readyz_503_when_a_migration_is_not_applied(monkeypatch):
    monkeypatch.setattr(ops, "_migrations_applied", False)
    latest = MigrationRecorder.Migration.objects.filter(app="shop").order_by("-applied", "-pk").first()
    latest.delete()  # as if the release's migrate had not run yet
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["migrations"]
    assert f"shop.{latest.name}" in response.json()["checks"]["migrations"]


@pytest.mark.parametrize(
    ("configured", "header", "status"),
    [
        ("", f"Bearer {TOKEN}", 404),  # metrics are off without METRICS_TOKEN
        (TOKEN, "", 401),
        (TOKEN, "Bearer wrong-token", 401),
        (TOKEN, f"Token {TOKEN}", 401),
        (TOKEN, f"Bearer {TOKEN}x", 401),
        (TOKEN, f"Bearer {TOKEN}", 200),
    ],
)
def test_metrics_only_with_the_bearer_token(settings, configured, header, status):
    settings.METRICS_TOKEN = configured
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    response = Client().get("/metrics", **headers)
    assert response.status_code == status
    if status != 200:
        assert b"cardshop_" not in response.content


def _scrape(settings) -> str:
    settings.METRICS_TOKEN = TOKEN
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def test_metrics_show_orders_deliveries_webhooks_failures_ledger_and_risk(settings, run_on_commit):
    product = factories.product_create(stock=5, price=1000)
    with run_on_commit():
        factories.order_delivered(product=product)
        factories.order_place(product=product)
    duplicate = factories.order_place(product=product).order
    body, headers = factories.signed_webhook(payment=duplicate.payments.get(), event_id="evt-twice")
    with run_on_commit():
        factories.webhook_post(Client(), body, headers)
        factories.webhook_post(Client(), body, headers)
    factories.webhook_post(Client(), b"{}", {"Sandbox-Signature": "t=1,v1=00"})
    order_deliver_task.apply(kwargs={"order_pk": 10**9}, throw=False)  # fails: no such order
    call_command("verify_ledger")

    text = _scrape(settings)

    assert 'cardshop_orders{status="delivered"} 2.0' in text
    assert 'cardshop_orders{status="awaiting_payment"} 1.0' in text
    assert 'cardshop_orders{status="refunded"} 0.0' in text
    assert "cardshop_orders_paid_undelivered 0.0" in text
    assert 'cardshop_webhooks_total{gateway="sandbox",outcome="processed"} 2.0' in text
    assert 'cardshop_webhooks_total{gateway="sandbox",outcome="duplicate"} 1.0' in text
    assert 'cardshop_webhooks_total{gateway="sandbox",outcome="rejected"} 1.0' in text
    assert "cardshop_deliveries_total 2.0" in text
    assert "cardshop_delivery_latency_seconds_count 2.0" in text
    assert 'cardshop_delivery_latency_seconds_bucket{le="+Inf"} 2.0' in text
    assert 'cardshop_task_failures_total{task="escrow.deliver_order"} 1.0' in text
    assert "cardshop_ledger_verify_ok 1.0" in text
    assert "cardshop_ledger_verify_problems 0.0" in text
    payments_assessed = Decision.objects.filter(event="payment", outcome="allow").count()
    assert payments_assessed == 2  # both paid orders were assessed before delivery
    assert f'cardshop_risk_decisions_total{{event="payment",outcome="allow"}} {payments_assessed}.0' in text
    assert "cardshop_queue_depth" in text


@requires_redis_server
def test_counters_are_shared_through_redis_by_every_process(settings, tmp_path):
    """With CACHE_URL on Redis the counts live there: what one process counts, another reads."""
    with redis_server(tmp_path) as server:
        settings.CACHE_URL = server.url(3)
        script = (
            "import django; django.setup(); from core import metrics; "
            "metrics.metric_count('webhooks', {'gateway': 'sandbox', 'outcome': 'processed'}, 2)"
        )
        env = {**os.environ, "CACHE_URL": server.url(3), "DJANGO_SETTINGS_MODULE": "config.settings"}
        subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, check=True, timeout=60)
        # Counted after the other process ran (its start takes longer than METRICS_FLUSH_SECONDS on a
        # slow machine, and this count's timer would have sent it meanwhile).
        metrics.metric_count("webhooks", {"gateway": "sandbox", "outcome": "processed"})
        field = '{"gateway":"sandbox","outcome":"processed"}'

        def stored() -> dict[str, float]:
            raw = redis.Redis.from_url(server.url(3)).hgetall(metrics.KEY_PREFIX + "webhooks")
            return {key.decode(): float(value) for key, value in raw.items()}

        # The other process sent its count as it exited; this one's is pending, and goes out with the
        # scrape (a process reads its own counts) or within METRICS_FLUSH_SECONDS.
        assert stored() == {field: 2.0}
        assert 'cardshop_webhooks_total{gateway="sandbox",outcome="processed"} 3.0' in _scrape(settings)
        assert stored() == {field: 3.0}
        metrics.metric_count("webhooks", {"gateway": "sandbox", "outcome": "processed"})
        assert stored() == {field: 3.0}
        deadline = time.monotonic() + 10 * settings.METRICS_FLUSH_SECONDS
        while stored() != {field: 4.0} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored() == {field: 4.0}  # sent by the timer, nobody read
        server.stop(kill=True)
        metrics.metric_count("webhooks", {"gateway": "sandbox", "outcome": "processed"})  # dropped, no error
        assert "cardshop_orders" in _scrape(settings)  # the scrape still answers


@requires_redis_server
@requires_postgres
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_pool_process_sends_its_pending_counts_when_it_stops(tmp_path):
    """A Celery pool process ends without atexit: what it counted and had not sent yet goes out at its
    warm shutdown (METRICS_FLUSH_SECONDS far away here, so only the shutdown can have sent it)."""
    with redis_server(tmp_path) as server:
        worker = Worker(
            broker_url=server.url(1),
            log=tmp_path / "worker.log",
            env={"CACHE_URL": server.url(3), "METRICS_FLUSH_SECONDS": "600"},
        )
        worker.start()
        try:
            with publishing_to(server.url(1)):
                order_deliver_task.delay(order_pk=10**9)  # fails: no such order
            wait_for(lambda: worker.deliveries_run() == 1, seconds=20, what="the failing delivery")
            counted = redis.Redis.from_url(server.url(3)).hgetall(metrics.KEY_PREFIX + "task_failures")
            assert counted == {}  # still pending in the pool process
        finally:
            worker.stop()
        counted = redis.Redis.from_url(server.url(3)).hgetall(metrics.KEY_PREFIX + "task_failures")
        failures = {key.decode(): float(value) for key, value in counted.items()}
        assert failures == {'{"task":"escrow.deliver_order"}': 1.0}


def test_json_logs_carry_the_event_its_ids_and_the_task_id(tmp_path):
    """LOG_FORMAT=json: one JSON object per line, with the `extra` fields and, inside a task, its id."""
    script = """
import logging
import django
django.setup()
from config.celery import app

@app.task(name="ops.probe")
def probe():
    logging.getLogger("escrow.services").info("escrow.order_delivered", extra={"order": 7, "payment": 9})

logging.getLogger("escrow.delivery").warning("escrow.delivery_enqueue_failed", extra={"order": 8})
app.conf.task_always_eager = True
probe.apply(task_id="task-123")
"""
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    events = {line["event"]: line for line in lines}
    outside = events["escrow.delivery_enqueue_failed"]
    assert (outside["order"], outside["level"], outside["logger"]) == (8, "WARNING", "escrow.delivery")
    assert "task_id" not in outside
    inside = events["escrow.order_delivered"]
    assert (inside["order"], inside["payment"], inside["task_id"], inside["task_name"]) == (
        7,
        9,
        "task-123",
        "ops.probe",
    )
    assert "time" in inside
    assert len(lines) == len(done.stderr.strip().splitlines())  # nothing but JSON lines


@requires_redis_server
def test_beat_lease_one_holder_and_a_clean_handover(settings, tmp_path):
    """Two schedulers on one Redis: the first holds the lease and renews it, the second is refused;
    when the holder shuts down cleanly it gives the lease back and the standby takes it at once."""
    from config.beat import SingleBeatScheduler
    from config.celery import app

    with redis_server(tmp_path) as server:
        settings.CELERY_BROKER_URL = server.url()
        first = SingleBeatScheduler(app=app, schedule_filename=str(tmp_path / "first"))
        second = SingleBeatScheduler(app=app, schedule_filename=str(tmp_path / "second"))
        assert first.lease_hold() is True
        assert first.lease_hold() is True  # renewed
        assert second.lease_hold() is False
        assert second.tick() == second.lease_seconds / 3  # a standby sends nothing, looks again soon
        first.close()
        assert second.lease_hold() is True
        server.stop(kill=True)
        assert second.lease_hold() is False  # Redis gone: nobody sends
        second.close()


@pytest.mark.django_db
def test_the_probes_are_named_in_the_urlconf_and_refuse_other_methods():
    from django.urls import reverse

    assert [reverse(name) for name in ("healthz", "readyz", "metrics")] == ["/healthz", "/readyz", "/metrics"]
    assert Client().post("/healthz").status_code == 405  # past the middleware (GET/HEAD only) to the URLconf
