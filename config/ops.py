"""What load balancers and Prometheus ask the shop: `/healthz`, `/readyz` and `/metrics`.

They are answered by a middleware at the top of the stack, before the HTTPS redirect, the host check
and the session: a balancer probes each web process over plain HTTP by its address, and neither a
301 nor a 400 for an unknown Host would tell it anything.

- `/healthz`: the process is up and serving (touches nothing else): 200 `{"status": "ok"}`.
- `/readyz`: this process can do its job: the database answers, every migration is applied, the
  broker answers. 200 `{"status": "ok", "checks": {...}}`, or 503 with `"failed": [names]` and each
  check's error, so a balancer takes the process out of rotation and a person sees why.
- `/metrics`: the Prometheus text format, only with `Authorization: Bearer <METRICS_TOKEN>` (compared
  in constant time); 404 when METRICS_TOKEN is not set, 401 for a missing or wrong token. Gauges are
  read from PostgreSQL and Redis at scrape time and counters from the shared store (core/metrics.py),
  so every web process answers for the whole deployment: scrape one target (or the balancer).
"""

import hashlib
import hmac
import logging

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from core import metrics

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2
_migrations_applied = False  # once true for this process (its code), it stays true


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_migrations() -> None:
    global _migrations_applied
    if _migrations_applied:
        return
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in plan[:5])
        raise RuntimeError(f"{len(plan)} migration(s) not applied: {names}")
    _migrations_applied = True


def _broker_redis():
    import redis

    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://")):
        return None
    return redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS)


def _check_broker() -> None:
    client = _broker_redis()
    if client is not None:
        try:
            client.ping()
        finally:
            client.close()
        return
    from config.celery import app

    with app.connection_for_write() as conn:  # any other transport (the demo's filesystem broker)
        conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_SECONDS)


READINESS_CHECKS = {"database": _check_database, "migrations": _check_migrations, "broker": _check_broker}


def readiness() -> tuple[bool, dict[str, str]]:
    results = {}
    for name, check in READINESS_CHECKS.items():
        if name == "migrations" and results.get("database") != "ok":
            results[name] = "skipped: the database is unreachable"
            continue
        try:
            check()
            results[name] = "ok"
        except Exception as error:  # a probe reports every failure, whatever its type
            results[name] = f"{type(error).__name__}: {error}"[:300]
    return all(value == "ok" for value in results.values()), results


def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request) -> JsonResponse:
    ready, checks = readiness()
    if ready:
        return JsonResponse({"status": "ok", "checks": checks})
    failed = [name for name, result in checks.items() if result != "ok"]
    logger.warning("ops.not_ready", extra={"failed": failed})
    return JsonResponse({"status": "unavailable", "failed": failed, "checks": checks}, status=503)


def _bearer_ok(request) -> bool | None:
    """None when metrics are off (no METRICS_TOKEN), else whether the request carries the token."""
    expected = getattr(settings, "METRICS_TOKEN", "")
    if not expected:
        return None
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    # Digests first, so that the comparison takes the same time whatever the given token's length.
    given_digest = hashlib.sha256(token.strip().encode()).digest()
    return scheme.lower() == "bearer" and hmac.compare_digest(given_digest, hashlib.sha256(expected.encode()).digest())


class ShopCollector:
    """Everything `/metrics` shows, gathered at scrape time."""

    def collect(self):
        yield from self._orders()
        yield from self._counters()
        yield from self._delivery_latency()
        yield from self._queue_depth()
        yield from self._ledger()
        yield from self._risk()

    def _orders(self):
        from escrow.delivery import orders_paid_undelivered
        from escrow.models import Order, OrderStatus
        from shop.models import StockUpload, StockUploadStatus

        by_status = dict.fromkeys(OrderStatus.values, 0)
        by_status.update(Order.objects.order_by().values_list("status").annotate(n=Count("pk")))
        family = GaugeMetricFamily(
            "cardshop_orders", "Orders by status (PostgreSQL, at scrape time).", labels=["status"]
        )
        for status, count in sorted(by_status.items()):
            family.add_metric([status], count)
        yield family
        grace = timezone.now() - timezone.timedelta(seconds=settings.ESCROW_DELIVERY_GRACE_SECONDS)
        yield GaugeMetricFamily(
            "cardshop_orders_paid_undelivered",
            "Orders paid more than ESCROW_DELIVERY_GRACE_SECONDS ago and still without their keys.",
            value=orders_paid_undelivered(paid_before=grace).count(),
        )
        yield GaugeMetricFamily(
            "cardshop_stock_uploads_running",
            "Stock uploads being imported.",
            value=StockUpload.objects.filter(status=StockUploadStatus.RUNNING).count(),
        )

    def _counters(self):
        specs = [
            ("webhooks", "cardshop_webhooks", "Gateway webhooks by outcome (processed, duplicate, rejected)."),
            ("task_failures", "cardshop_task_failures", "Celery tasks that raised, by task."),
            ("task_retries", "cardshop_task_retries", "Celery task retries, by task."),
        ]
        for metric, name, documentation in specs:
            values = metrics.metric_read(metric)
            labels = sorted({key for field in values for key in metrics.metric_labels(field)})
            family = CounterMetricFamily(name, documentation, labels=labels)
            for field, value in sorted(values.items()):
                found = metrics.metric_labels(field)
                family.add_metric([found.get(label, "") for label in labels], value)
            yield family

    def _risk(self):
        """Risk decisions by event and outcome, counted from the stored decisions at scrape time (every
        decision is a row and none is deleted, so the count only grows: a counter, at no cost to the
        checkout that made it)."""
        from risk.models import Decision

        family = CounterMetricFamily(
            "cardshop_risk_decisions", "Risk decisions by event and outcome.", labels=["event", "outcome"]
        )
        rows = Decision.objects.order_by().values_list("event", "outcome").annotate(n=Count("pk"))
        for event, outcome, count in sorted(rows):
            family.add_metric([event, outcome], count)
        yield family

    def _delivery_latency(self):
        values = metrics.metric_read("delivery_latency")
        cumulative, buckets = 0.0, []
        for edge in (*[str(edge) for edge in metrics.DELIVERY_LATENCY_BUCKETS], "+Inf"):
            cumulative += values.get(edge, 0.0)
            buckets.append((edge, cumulative))
        yield CounterMetricFamily(
            "cardshop_deliveries", "Orders delivered (keys handed over).", value=values.get("count", 0.0)
        )
        yield HistogramMetricFamily(
            "cardshop_delivery_latency_seconds",
            "Seconds from the verified payment to the delivered keys.",
            buckets=buckets,
            sum_value=values.get("sum", 0.0),
        )

    def _queue_depth(self):
        family = GaugeMetricFamily(
            "cardshop_queue_depth",
            "Celery messages waiting in the broker, and taken but unacknowledged.",
            labels=["queue"],
        )
        client = _broker_redis()
        if client is not None:
            try:
                family.add_metric(["celery"], client.llen("celery"))
                family.add_metric(["unacked"], client.hlen("unacked"))
            except Exception:
                logger.debug("ops.queue_depth_unreadable", exc_info=True)
            finally:
                client.close()
        yield family

    def _ledger(self):
        values = {metrics.metric_labels(k).get("field"): v for k, v in metrics.metric_read("ledger_verify").items()}
        if "problems" not in values:
            return
        yield GaugeMetricFamily(
            "cardshop_ledger_verify_problems",
            "Failed invariants at the last ledger verification.",
            value=values["problems"],
        )
        yield GaugeMetricFamily(
            "cardshop_ledger_verify_ok",
            "1 if the last ledger verification found no problem.",
            value=values["problems"] == 0,
        )
        yield GaugeMetricFamily(
            "cardshop_ledger_verify_timestamp_seconds",
            "When the last ledger verification ran (Unix time).",
            value=values.get("last_run", 0.0),
        )


def metrics_view(request) -> HttpResponse:
    allowed = _bearer_ok(request)
    if allowed is None:
        return HttpResponse(status=404)
    if not allowed:
        return HttpResponse(status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ShopCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


ENDPOINTS = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}


class OpsEndpointsMiddleware:
    """Answer the operations endpoints before anything else (first in MIDDLEWARE); GET or HEAD only."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        view = ENDPOINTS.get(request.path_info)
        if view is None or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        response = view(request)
        response["Cache-Control"] = "no-store"
        return response
