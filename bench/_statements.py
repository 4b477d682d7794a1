"""Counts every SQL statement the app processes send, for `bench/purchase.py` (installed only by
`bench.settings`, never by the shop's own settings).

PostgreSQL cannot count statements here without `pg_stat_statements` in `shared_preload_libraries`
(a server restart), so each web and worker process counts what Django hands its database driver: a
`connection.execute_wrappers` entry on every connection. That is every statement Django executes,
savepoints included; the driver's implicit BEGIN and Django's COMMIT / ROLLBACK are not statements
here (the benchmark reads transactions from `pg_stat_database` instead).

Each process publishes its running total to the Redis hash `STATEMENTS_KEY` (field "<role>:<pid>")
from a daemon thread every `PUBLISH_SECONDS`, so the per-statement cost is a lock and an add.
"""

import os
import sys
import threading
import time

from django.apps import AppConfig
from django.db.backends.signals import connection_created

STATEMENTS_KEY = "bench:statements"
PUBLISH_SECONDS = 0.2

_lock = threading.Lock()
_count = [0]
_publisher_pid = [0]


def _role() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return "web" if "gunicorn" in program else "worker" if "celery" in program else "other"


def _counted(execute, sql, params, many, context):
    with _lock:
        _count[0] += 1
    return execute(sql, params, many, context)


def _publish_forever() -> None:
    import redis

    client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    field = f"{_role()}:{os.getpid()}"
    published = -1
    while True:
        count = _count[0]
        if count != published:
            try:
                client.hset(STATEMENTS_KEY, field, count)
                published = count
            except redis.RedisError:
                # Redis is away for now: the next round publishes the total again.
                pass
        time.sleep(PUBLISH_SECONDS)


def _reset_in_child() -> None:
    # A forked process (a prefork pool child) starts its own count and its own publisher.
    _count[0] = 0
    _publisher_pid[0] = 0


def _connection_created(sender, connection, **kwargs) -> None:
    if _counted not in connection.execute_wrappers:  # the wrapper object outlives a reconnect
        connection.execute_wrappers.append(_counted)
    with _lock:
        if _publisher_pid[0] != os.getpid():
            _publisher_pid[0] = os.getpid()
            threading.Thread(target=_publish_forever, name="bench-statements", daemon=True).start()


class StatementCounting(AppConfig):
    name = "bench._statements"
    label = "bench_statements"

    def ready(self) -> None:
        os.register_at_fork(after_in_child=_reset_in_child)
        connection_created.connect(_connection_created, dispatch_uid="bench-statement-count")
