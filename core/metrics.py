"""Counters and histograms shared by every process of the shop, for `/metrics` (config/ops.py).

Web workers (gunicorn forks several), Celery workers and hosts all count into one place: a Redis hash
per metric on the shared cache (CACHE_URL), so any web process's `/metrics` shows the whole
deployment, with no per-process files (prometheus_client's multiprocess mode) to share between
hosts. Without a Redis cache (the demo, most tests) they live in this process's memory.

A process adds its counts up in memory and sends them in one round trip at most every
METRICS_FLUSH_SECONDS (1; from a timer thread, and at exit): a webhook or a delivery no longer waits
on Redis for its counter (a round trip each, ~3 % of a web and of a worker process's CPU under
bench/purchase.py). A scrape sees another process's counts up to a second late, its own process's at
once (`metric_read` sends what is pending first). A process killed outright loses its last second of
counts; a Celery pool process, which ends without atexit, sends them at its shutdown (config/celery.py).

Counting never fails the caller: with Redis unreachable a count is dropped and logged at debug level
(a metric is not worth a failed webhook). A Redis restart resets them, which Prometheus's `rate()` and
`increase()` read as a counter reset.
"""

import atexit
import json
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "cardshop:metrics:"
# Seconds from a verified payment to the keys on the buyer's page: the design's target is well under
# one; the top buckets catch the sweeper's recoveries (5-15 s) and outages.
DELIVERY_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_local: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
_local_lock = threading.Lock()
# Counts not yet in Redis, and the timer that will send them (None: nothing pending).
_pending: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
_pending_lock = threading.Lock()
_flush_timer: threading.Timer | None = None
_redis_client = None
_redis_url_used = None


def _redis():
    """A client for the shared cache's Redis, or None when the cache is not Redis."""
    global _redis_client, _redis_url_used
    url = getattr(settings, "CACHE_URL", "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    if _redis_client is None or _redis_url_used != url:
        import redis

        _redis_client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        _redis_url_used = url
    return _redis_client


def _field(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def _increment(metric: str, fields: Iterable[tuple[str, float]]) -> None:
    global _flush_timer
    if _redis() is None:
        with _local_lock:
            for field, amount in fields:
                _local[metric][field] += amount
        return
    with _pending_lock:
        for field, amount in fields:
            _pending[metric][field] += amount
        if _flush_timer is None:
            _flush_timer = threading.Timer(settings.METRICS_FLUSH_SECONDS, metrics_flush)
            _flush_timer.daemon = True
            _flush_timer.start()


def metrics_flush() -> None:
    """Send this process's pending counts to Redis, in one round trip (dropped if it is unreachable)."""
    global _flush_timer
    with _pending_lock:
        batch = [(metric, field, amount) for metric, fields in _pending.items() for field, amount in fields.items()]
        _pending.clear()
        _flush_timer = None
    client = _redis()
    if not batch or client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for metric, field, amount in batch:
            pipe.hincrbyfloat(KEY_PREFIX + metric, field, amount)
        pipe.execute()
    except Exception:  # never let a metric fail anything
        logger.debug("core.metric_dropped", extra={"metrics": sorted({m for m, _, _ in batch})}, exc_info=True)


def _forget_pending() -> None:
    """In a forked child: the parent's pending counts are the parent's to send, its timer is not here,
    and its lock may have been held by another thread at the fork."""
    global _flush_timer, _pending_lock
    _pending_lock = threading.Lock()
    _pending.clear()
    _flush_timer = None


atexit.register(metrics_flush)  # a Celery pool process exits without atexit: config/celery.py flushes it
os.register_at_fork(after_in_child=_forget_pending)


def metric_count(metric: str, labels: dict[str, str] | None = None, amount: float = 1) -> None:
    """Add `amount` to the counter `metric` with these labels."""
    _increment(metric, [(_field(labels or {}), amount)])


def metric_set(metric: str, labels: dict[str, str] | None = None, *, value: float) -> None:
    """Set a gauge kept in the shared store (e.g. the last ledger verification's result)."""
    client = _redis()
    field = _field(labels or {})
    if client is None:
        with _local_lock:
            _local[metric][field] = value
        return
    try:
        client.hset(KEY_PREFIX + metric, field, value)
    except Exception:
        logger.debug("core.metric_dropped", extra={"metric": metric}, exc_info=True)


def metric_observe(metric: str, value: float, *, buckets: tuple[float, ...]) -> None:
    """Record one observation in a histogram: the first bucket it fits in, the sum and the count."""
    bucket = next((str(edge) for edge in buckets if value <= edge), "+Inf")
    _increment(metric, [(bucket, 1), ("sum", value), ("count", 1)])


def metric_read(metric: str) -> dict[str, float]:
    """Every field of one metric: {labels JSON or bucket name: value}; empty if Redis is unreachable."""
    metrics_flush()  # this process's own counts are in what it reads
    client = _redis()
    if client is None:
        with _local_lock:
            return dict(_local.get(metric, {}))
    try:
        raw = client.hgetall(KEY_PREFIX + metric)
    except Exception:
        logger.debug("core.metric_unreadable", extra={"metric": metric}, exc_info=True)
        return {}
    return {key.decode(): float(value) for key, value in raw.items()}


def metric_labels(field: str) -> dict[str, str]:
    return json.loads(field)


def metrics_reset_local() -> None:
    """Forget the in-process values and the counts not yet sent (tests)."""
    with _local_lock:
        _local.clear()
    with _pending_lock:
        _pending.clear()
