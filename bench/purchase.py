"""Purchase throughput: closed-loop buyers through the API, from checkout to the key (issue 9).

    .venv/bin/python bench/purchase.py --levels 1,8,32 --seconds 20 --keys 20000

One purchase is what a buyer's program does: create the order (`POST /api/v1/orders/`, 201 with the
payment id and the access token), have the payment provider send its signed `payment.succeeded`
webhook (`POST /payments/sandbox/webhook/`, body and signature as the sandbox gateway makes them),
then poll `GET /api/v1/orders/{id}/keys/` with `X-Order-Token` (409 until delivered) every
`--poll-interval` seconds until the key is read. Each of N buyers (threads here) starts its next
purchase as soon as the last one ends, for `--seconds`; every request goes on a new connection.

Against what the script starts and stops: `gunicorn config.wsgi` on a free loopback port and a
`celery -A config worker` (prefork), on PostgreSQL and a Redis broker (also the cache, CACHE_URL, where
the rate limits count). The app processes run with `bench.settings` (every SQL statement counted) and
with the abuse limits out of reach (CHECKOUT_RATE_LIMIT, KEY_REVEAL_RATE_LIMIT,
RESERVATION_MAX_KEYS_PER_IP): one buyer here buys far faster than a person. Each buyer has its own
address, sent as X-Forwarded-For with the script trusted as the proxy (TRUSTED_PROXIES=127.0.0.1/32),
as buyers reach a production shop through its reverse proxy. The database is dropped and created
again first (`--fresh`, the default; only a database whose name contains "bench"), migrated, and given
a product with `--keys` keys; the Redis database is flushed.

Per level it prints purchases per second (completed purchases / time until the last buyer finished),
create, webhook -> key (webhook sent to key read) and whole-purchase p50 / p99, errors, the share of
purchases whose key was there at the first poll, polls per purchase, and costs per purchase: SQL
statements sent by the web and worker processes, transactions committed or rolled back in the bench
database and connections opened to it (`pg_stat_database`, which PostgreSQL publishes up to 10 s
late, so the script waits 11 s after each level), and CPU milliseconds from /proc (utime + stime) of
gunicorn (master and workers), the Celery worker (all its processes), the PostgreSQL backends on the
bench database still connected at the end of the level, the whole PostgreSQL cluster (the postmaster
with every backend it forked, reaped ones included: exact on a quiet server, shared with other
databases on a busy one; needs PostgreSQL on this machine) and this script.

Then, on the same database, a raw-SQL purchase loop in scratch tables of its own (`bench_raw_*`,
dropped at the end): per purchase one transaction that claims an available key with
`FOR UPDATE SKIP LOCKED`, inserts an order-like row, marks the key sold and inserts two ledger-like
rows, from `--raw-threads` threads; its purchases per second against the API's give the ratio.

Checks at the end (exit 1 if one fails): no key in two orders (by plaintext, over every key an order
holds, and no key read by two purchases; each buyer read the key its order holds); every paid order
delivered exactly once (one `order.delivered` audit line, one webhook event, one payment transfer,
`quantity` sold keys); `ledger_problems()` is empty (what `verify_ledger` checks); the raw loop sold
each of its keys once. Exit 2 if the checks pass but some purchases failed. Subprocess output goes to
var/bench/.
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/cardshop_bench_purchase"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/11"
ORDERS_PATH = "/api/v1/orders/"
QUANTITY = 1
# PostgreSQL publishes a backend's transaction counts when it goes idle, at most once a second, and an
# idle backend that has just published waits 10 s (PGSTAT_IDLE_INTERVAL) before publishing the rest.
STATS_LAG_SECONDS = 11.0


def levels_type(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of buyer counts: {text!r}") from None
    if not levels or min(levels) < 1 or max(levels) > 1000:
        raise argparse.ArgumentTypeError(f"every level needs 1 to 1000 buyers: {text!r}")
    return levels


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--levels", type=levels_type, default=[1, 8, 32], help="concurrent buyers, one level after another (1,8,32)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help=(
            "run the levels this many times, every other time in reverse order (8,32,32,8,8,32 for"
            " --levels 8,32 --repeat 3), and print each level's median rate (default 1)"
        ),
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per level (default 20)")
    parser.add_argument("--keys", type=int, default=20000, help="keys in stock at the start (default 20000)")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn worker processes (default 4, as deployed)")
    parser.add_argument(
        "--web-threads", type=int, default=None, help="threads per gunicorn worker (default 2 for gthread, 1 for sync)"
    )
    parser.add_argument(
        "--worker-class",
        choices=["gthread", "sync"],
        default="sync",
        help="gunicorn worker class (default sync, as deployed)",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument(
        "--pool",
        choices=["prefork", "threads", "solo"],
        default="prefork",
        help=(
            "Celery's execution pool (default prefork, as deployed; threads: --concurrency threads in one process;"
            " solo: --concurrency single-process workers)"
        ),
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER_URL))
    parser.add_argument(
        "--fresh",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop and recreate the bench database first (default; --no-fresh reuses it and adds a product)",
    )
    parser.add_argument("--no-raw", dest="raw", action="store_false", help="skip the raw-SQL purchase loop")
    parser.add_argument("--raw-threads", type=int, default=16, help="threads of the raw-SQL loop (default 16)")
    parser.add_argument(
        "--raw-keys", type=int, default=200_000, help="keys in the raw loop's scratch table (default 200000)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.1, help="seconds between two polls of the keys (default 0.1)"
    )
    parser.add_argument(
        "--key-timeout", type=float, default=30.0, help="seconds after the webhook before a purchase fails (30)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds of 2 buyers first (default 3)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.poll_interval <= 0 or args.key_timeout <= 0 or args.warmup < 0:
        parser.error("--seconds, --poll-interval and --key-timeout must be above 0, --warmup at least 0")
    for name in ("keys", "web_workers", "concurrency", "raw_threads", "raw_keys", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.web_threads is None:
        args.web_threads = 2 if args.worker_class == "gthread" else 1
    if args.web_threads < 1:
        parser.error("--web-threads must be at least 1")
    if args.worker_class == "sync" and args.web_threads > 1:
        parser.error("a sync gunicorn worker has one thread (gunicorn would switch to gthread): --web-threads 1")
    if not args.database_url.startswith(("postgres://", "postgresql://")) or not args.broker_url.startswith("redis://"):
        parser.error("the benchmark runs on PostgreSQL and Redis: give postgres:// and redis:// URLs")
    name = args.database_url.rsplit("/", 1)[-1].split("?", 1)[0]
    if args.fresh and "bench" not in name:
        parser.error(f"--fresh drops the database, and {name!r} is not a benchmark's (no 'bench' in its name)")
    return args


ARGS = parse_args()
# The settings read these when Django starts, in this process and in the subprocesses alike.
os.environ.update(
    DATABASE_URL=ARGS.database_url,
    CELERY_BROKER_URL=ARGS.broker_url,
    CELERY_TASK_ALWAYS_EAGER="0",
    DEBUG="0",
    LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
    EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    DJANGO_SETTINGS_MODULE="config.settings",
)
# What only the web and worker processes get: statements counted (bench/settings.py), the rate limits
# shared in Redis as in production, the script trusted as the reverse proxy that names each buyer's
# address (one per buyer, so per-address locks and caps see many buyers, as in production), and the
# abuse limits out of reach, since one buyer here buys far faster than a person (the limiters still
# run: their cost stays in the figures).
OUT_OF_REACH = "1000000/s"
APP_ENV = {
    "DJANGO_SETTINGS_MODULE": "bench.settings",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    "CACHE_URL": ARGS.broker_url,
    "TRUSTED_PROXIES": "127.0.0.1/32",
    "CHECKOUT_RATE_LIMIT": OUT_OF_REACH,
    "KEY_REVEAL_RATE_LIMIT": OUT_OF_REACH,
    "RESERVATION_MAX_KEYS_PER_IP": "1000000",
}

import dj_database_url  # noqa: E402
import django  # noqa: E402
import psycopg2  # noqa: E402
import redis  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from bench._harness import (  # noqa: E402
    WEBHOOK_PATH,
    Processes,
    cpu_times,
    cpu_used,
    database_prepare,
    exactly_once_problems,
    interrupt_on_signals,
    log,
    parent_pid,
    percentile,
    process_cpu_seconds,
    process_group,
    process_name,
    process_tree_cpu_seconds,
    product_with_keys,
    settle,
    wait_until,
    web_start,
    worker_start,
)
from bench._statements import STATEMENTS_KEY  # noqa: E402
from escrow.gateways.sandbox.gateway import SIGNATURE_HEADER, event_body, signature_header  # noqa: E402
from escrow.models import Order, PaymentStatus  # noqa: E402
from shop import crypto  # noqa: E402
from shop.models import CardKey, CardKeyStatus  # noqa: E402
from shop.services import merchant_data_key  # noqa: E402

DATABASE_NAME = dj_database_url.parse(ARGS.database_url)["NAME"]
SETTLE_TABLES = ["shop_cardkey", "shop_product", "shop_merchant", "accounts_user", "accounts_auditentry"]
# What purchases write, analysed after the warm-up and between levels: what autovacuum does as they grow
# on a production server (this machine's PostgreSQL runs with autovacuum off). Never analysed, they
# keep the statistics of empty tables, and a plan chosen for an empty table (a sequential scan of a
# page or two) is kept by a session's prepared statements while the table grows by thousands of rows.
PURCHASE_TABLES = [
    "escrow_order",
    "escrow_payment",
    "escrow_transfer",
    "escrow_webhookevent",
    "escrow_keyreveal",
    "escrow_ledgeraccount",
    "risk_decision",
    "risk_seenidentity",
    "accounts_notification",
]
CPU_GROUPS = ("web", "worker", "pg bench db", "pg cluster", "client")


# --- one purchase, as a buyer's program makes it ---------------------------------------------------


@dataclass
class Purchase:
    started: float
    webhook_sent: float = 0.0
    key_read: float = 0.0
    created: float = 0.0
    polls: int = 0
    order_pk: int = 0
    key: str = ""
    error: str = ""


def call(port: int, method: str, path: str, *, body: bytes | None = None, headers=None) -> tuple[int, bytes]:
    # A new connection per request: no race with the server closing an idle keep-alive connection.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def refusal(status: int, payload: bytes) -> str:
    """How an answer said no, for the error counts: the status and the JSON error's code."""
    try:
        answer = json.loads(payload)
        code = answer.get("code") or answer.get("result")
    except (ValueError, AttributeError):
        code = None
    return f"{status} {code or payload[:60]!r}"


def purchase(*, port: int, product_pk: int, email: str, address: str) -> Purchase:
    """One purchase by the buyer at `address` (sent as X-Forwarded-For; the provider's webhook has none)."""
    item = Purchase(started=time.monotonic())
    proxied = {"X-Forwarded-For": address}
    stage = "create"
    try:
        status, payload = call(
            port,
            "POST",
            ORDERS_PATH,
            body=json.dumps({"product": product_pk, "quantity": QUANTITY, "email": email}).encode(),
            headers={"Content-Type": "application/json", **proxied},
        )
        item.created = time.monotonic()
        if status != 201:
            item.error = f"create: {refusal(status, payload)}"
            return item
        placed = json.loads(payload)
        item.order_pk, token, payment = placed["id"], placed["access_token"], placed["payment"]

        stage = "webhook"
        body = event_body(
            event_type="payment.succeeded",
            payment_id=payment["payment_id"],
            amount=payment["amount"],
            currency=payment["currency"],
        )
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(body=body, timestamp=int(time.time())),
        }
        item.webhook_sent = time.monotonic()
        status, payload = call(port, "POST", WEBHOOK_PATH, body=body, headers=headers)
        if status != 200 or json.loads(payload).get("result") != "processed":
            item.error = f"webhook: {refusal(status, payload)}"
            return item

        stage = "keys"
        path, headers = f"{ORDERS_PATH}{item.order_pk}/keys/", {"X-Order-Token": token, **proxied}
        deadline = item.webhook_sent + ARGS.key_timeout
        while True:
            status, payload = call(port, "GET", path, headers=headers)
            item.polls += 1
            if status == 200:
                item.key_read = time.monotonic()
                keys = json.loads(payload)["keys"]
                if len(keys) != QUANTITY:
                    item.error = f"keys: {len(keys)} keys, not {QUANTITY}"
                else:
                    item.key = keys[0]
                return item
            if status != 409:
                item.error = f"keys: {refusal(status, payload)}"
                return item
            if time.monotonic() > deadline:
                item.error = f"keys: not delivered {ARGS.key_timeout:g} s after the webhook"
                return item
            time.sleep(ARGS.poll_interval)
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as error:
        item.error = f"{stage}: {type(error).__name__}"
        return item


def buyers_run(
    *, buyers: int, seconds: float, port: int, product_pk: int, tag: str, stop: threading.Event, check_alive
):
    """`buyers` closed loops for `seconds`; returns the purchases and the time until the last one ended.
    `check_alive` raises as soon as a server process has died (the buyers would only count errors)."""
    results: list[Purchase] = []  # list.append is atomic
    start = time.monotonic()
    end = start + seconds

    # Every purchase is a different person: their own e-mail and address. The risk engine runs on every
    # checkout as in production; one thread buying from one address with a new e-mail each time is
    # card testing to it (challenged from the tenth checkout), which is not the load this measures.
    def buyer(number: int) -> None:
        count = 0
        while time.monotonic() < end and not stop.is_set():
            serial = number * 100_000 + count
            address = f"10.{serial // 62_500 % 250 + 1}.{serial // 250 % 250}.{serial % 250 + 1}"
            email = f"{tag}-{number}-{count}@example.com"
            results.append(purchase(port=port, product_pk=product_pk, email=email, address=address))
            count += 1

    threads = [threading.Thread(target=buyer, args=(n,), name=f"buyer-{n}", daemon=True) for n in range(buyers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)  # in slices, so that Ctrl-C and a dead server are seen
            check_alive()
    return results, time.monotonic() - start


# --- what a level costs ----------------------------------------------------------------------------


@dataclass
class CpuReading:
    groups: dict[str, dict[int, float]]  # CPU seconds per process, per group
    machine: tuple[int, int]  # all and idle jiffies of the whole machine


class Meter:
    """CPU per process group from /proc, statements from the app processes, transactions from PostgreSQL."""

    def __init__(self, processes: Processes, broker: redis.Redis) -> None:
        self.processes = processes
        self.broker = broker
        config = dj_database_url.parse(ARGS.database_url)
        # On the server's maintenance database, so that reading the statistics adds no transaction here.
        self.monitor = psycopg2.connect(
            dbname="postgres",
            user=config["USER"],
            password=config["PASSWORD"] or None,
            host=config["HOST"] or "127.0.0.1",
            port=config["PORT"] or 5432,
        )
        self.monitor.autocommit = True
        # PostgreSQL forks a backend per connection: the postmaster, with what it has reaped, holds them all.
        [(backend,)] = self._query("SELECT pg_backend_pid()")
        self.postgres_here = process_name(backend) == "postgres"
        self.postmaster = parent_pid(backend) if self.postgres_here else None
        if not self.postgres_here:
            log("note: PostgreSQL does not run on this machine (or not visibly): no PostgreSQL CPU figures")

    def close(self) -> None:
        self.monitor.close()

    def _query(self, query: str, params=()) -> list[tuple]:
        with self.monitor.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()

    def cpu(self) -> CpuReading:
        backends = [
            pid for (pid,) in self._query("SELECT pid FROM pg_stat_activity WHERE datname = %s", [DATABASE_NAME])
        ]
        running = {name for name, _ in self.processes.running}
        groups = {
            "web": process_group(self.processes.pgid("gunicorn")) if "gunicorn" in running else [],
            "worker": [
                pid
                for name in sorted(running)
                if name.startswith("celery-worker")
                for pid in process_group(self.processes.pgid(name))
            ],
            "pg bench db": backends if self.postgres_here else [],
            "client": [os.getpid()],
        }
        readings = {name: process_cpu_seconds(pids) for name, pids in groups.items()}
        readings["pg cluster"] = {self.postmaster: process_tree_cpu_seconds(self.postmaster)} if self.postmaster else {}
        return CpuReading(readings, cpu_times())

    def counters(self) -> Counter:
        """Statements per role and transactions in the bench database, once PostgreSQL has published them."""
        time.sleep(STATS_LAG_SECONDS)
        counts = Counter()
        for field, value in self.broker.hgetall(STATEMENTS_KEY).items():
            counts[field.decode().split(":", 1)[0]] += int(value)
        [(counts["transactions"], counts["connections"])] = self._query(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = %s", [DATABASE_NAME]
        )
        return counts

    def queue_drained(self) -> None:
        """Wait until the worker has run everything queued (e-mails behind the last deliveries)."""

        def drained() -> bool:
            self.processes.check_alive()
            return self.broker.llen("celery") == 0 and self.broker.hlen("unacked") == 0

        wait_until(drained, seconds=60, what="the Celery queue to drain", interval=0.1)


@dataclass
class Level:
    name: str
    purchases: list[Purchase]
    elapsed: float
    cpu_before: CpuReading
    cpu_after: CpuReading
    counts_before: Counter
    counts_after: Counter
    statements_fixed: float | None = None  # the raw loop knows its own

    @property
    def done(self) -> list[Purchase]:
        return [p for p in self.purchases if not p.error]

    @property
    def rate(self) -> float:
        return len(self.done) / self.elapsed if self.elapsed else 0.0

    def cpu_ms(self, group: str) -> float:
        used = cpu_used(self.cpu_before.groups[group], self.cpu_after.groups[group])
        return 1000 * used / max(1, len(self.done))

    def machine_busy(self) -> float:
        (total_a, idle_a), (total_b, idle_b) = self.cpu_before.machine, self.cpu_after.machine
        return 100.0 * (1 - (idle_b - idle_a) / max(1, total_b - total_a))

    def per_purchase(self, what: str) -> float:
        return (self.counts_after[what] - self.counts_before[what]) / max(1, len(self.done))


# --- the raw-SQL loop ------------------------------------------------------------------------------

RAW_TABLES = ["bench_raw_transfer", "bench_raw_order", "bench_raw_key"]
RAW_STATEMENTS = 4  # claim, order, key sold, two transfers (one INSERT); BEGIN and COMMIT aside


def raw_drop(cursor) -> None:
    for table in RAW_TABLES:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")


def raw_prepare(keys: int) -> None:
    """Scratch tables shaped like the shop's keys, orders and transfers (the claim index included)."""
    with connection.cursor() as cursor:
        raw_drop(cursor)
        cursor.execute(
            "CREATE TABLE bench_raw_key (id bigserial PRIMARY KEY, product_id integer NOT NULL,"
            " status varchar(16) NOT NULL, order_id bigint, sealed bytea NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO bench_raw_key (product_id, status, sealed)"
            " SELECT 1, 'available', decode(md5(i::text) || md5(i::text), 'hex') FROM generate_series(1, %s) i",
            [keys],
        )
        cursor.execute(
            "CREATE INDEX bench_raw_key_available ON bench_raw_key (product_id, id) WHERE status = 'available'"
        )
        cursor.execute(
            "CREATE TABLE bench_raw_order (id bigserial PRIMARY KEY, product_id integer NOT NULL,"
            " email varchar(254) NOT NULL, amount bigint NOT NULL, currency varchar(3) NOT NULL,"
            " status varchar(16) NOT NULL, created_at timestamptz NOT NULL)"
        )
        cursor.execute(
            "CREATE TABLE bench_raw_transfer (id bigserial PRIMARY KEY, transfer_id varchar(64) NOT NULL UNIQUE,"
            " order_id bigint NOT NULL, debit_account integer NOT NULL, credit_account integer NOT NULL,"
            " amount bigint NOT NULL, created_at timestamptz NOT NULL)"
        )
        cursor.execute("VACUUM ANALYZE bench_raw_key")


def raw_connect():
    config = dj_database_url.parse(ARGS.database_url)
    return psycopg2.connect(
        dbname=config["NAME"],
        user=config["USER"],
        password=config["PASSWORD"] or None,
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
    )


def raw_purchase(db, number: int) -> str:
    """One purchase in one transaction; '' when done, else why not."""
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM bench_raw_key WHERE product_id = 1 AND status = 'available'"
            " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
        row = cursor.fetchone()
        if row is None:
            db.rollback()
            return "out of stock"
        cursor.execute(
            "INSERT INTO bench_raw_order (product_id, email, amount, currency, status, created_at)"
            " VALUES (1, %s, 1000, 'CNY', 'delivered', now()) RETURNING id",
            [f"raw-{number}@example.com"],
        )
        (order_pk,) = cursor.fetchone()
        cursor.execute("UPDATE bench_raw_key SET status = 'sold', order_id = %s WHERE id = %s", [order_pk, row[0]])
        cursor.execute(
            "INSERT INTO bench_raw_transfer (transfer_id, order_id, debit_account, credit_account, amount, created_at)"
            " VALUES (%s, %s, 1, 2, 1000, now()), (%s, %s, 2, 3, 950, now())",
            [f"payment:{order_pk}", order_pk, f"order:{order_pk}:share", order_pk],
        )
    db.commit()
    return ""


def raw_run(*, threads: int, seconds: float, meter: Meter, stop: threading.Event) -> Level:
    databases = [raw_connect() for _ in range(threads)]
    try:
        results: list[Purchase] = []
        counts_before = meter.counters()
        cpu_before = meter.cpu()
        start = time.monotonic()
        end = start + seconds

        def loop(index: int) -> None:
            db = databases[index]
            number = index
            while time.monotonic() < end and not stop.is_set():
                item = Purchase(started=time.monotonic())
                try:
                    item.error = raw_purchase(db, number)
                except psycopg2.Error as error:
                    db.rollback()
                    item.error = f"raw: {type(error).__name__}"
                item.key_read = time.monotonic()
                results.append(item)
                if item.error == "out of stock":
                    return
                number += threads

        workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():
                worker.join(0.5)
        elapsed = time.monotonic() - start
        cpu_after = meter.cpu()
        return Level(
            name=f"raw SQL x{threads}",
            purchases=results,
            elapsed=elapsed,
            cpu_before=cpu_before,
            cpu_after=cpu_after,
            counts_before=counts_before,
            counts_after=meter.counters(),
            statements_fixed=RAW_STATEMENTS,
        )
    finally:
        for db in databases:
            db.close()


def raw_problems() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT order_id) FROM bench_raw_key"
            " WHERE status = 'sold' AND order_id IS NOT NULL"
        )
        sold, orders_with_keys = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM bench_raw_order")
        (orders,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM bench_raw_transfer")
        (transfers,) = cursor.fetchone()
    if sold == orders_with_keys == orders and transfers == 2 * orders:
        return []
    return [f"raw loop: {sold} keys sold to {orders_with_keys} orders of {orders}, {transfers} transfers"]


# --- the checks ------------------------------------------------------------------------------------


def key_problems(product, purchases: list[Purchase]) -> list[str]:
    """No key in two orders, no key read by two purchases, and each buyer read the key their order holds."""
    data_key = merchant_data_key(product.merchant)
    held: dict[int, list[str]] = {}
    owners: dict[str, list[int]] = {}
    for order_pk, sealed, fingerprint in CardKey.objects.filter(product=product, order__isnull=False).values_list(
        "order_id", "sealed", "fingerprint"
    ):
        plain = crypto.card_key_open(
            data_key=data_key,
            sealed=bytes(sealed),
            aad=crypto.card_key_aad(product_pk=product.pk, fingerprint=bytes(fingerprint)),
        )
        held.setdefault(order_pk, []).append(plain)
        owners.setdefault(plain, []).append(order_pk)
    problems = [f"key held by orders {pks}" for pks in owners.values() if len(pks) > 1]
    readers = Counter(p.key for p in purchases if p.key)
    problems += [f"one key read by {n} purchases" for n in readers.values() if n > 1]
    problems += [
        f"order {p.order_pk}: the buyer read a key the order does not hold"
        for p in purchases
        if p.key and held.get(p.order_pk) != [p.key]
    ]
    return problems


def paid_orders(product) -> list[int]:
    return list(
        Order.objects.filter(product=product, payments__status=PaymentStatus.SUCCEEDED)
        .values_list("pk", flat=True)
        .distinct()
    )


# --- output ----------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def p50_p99(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50) * 1000:.0f} / {percentile(values, 99) * 1000:.0f}"


def report(levels: list[Level], raw: Level | None) -> None:
    print()
    print(
        f"gunicorn {ARGS.web_workers} x {ARGS.web_threads} ({ARGS.worker_class}), "
        f"celery {ARGS.pool} x {ARGS.concurrency}, "
        f"{os.cpu_count()} CPUs; {ARGS.seconds:g} s per level; polls every {ARGS.poll_interval:g} s; "
        f"database {DATABASE_NAME}"
    )
    rows = []
    for level in levels:
        done = level.done
        first = sum(1 for p in done if p.polls == 1)
        rows.append(
            [
                level.name,
                len(done),
                f"{level.rate:.1f}",
                len(level.purchases) - len(done),
                p50_p99([p.created - p.started for p in done]),
                p50_p99([p.key_read - p.webhook_sent for p in done]),
                p50_p99([p.key_read - p.started for p in done]),
                f"{100 * first / len(done):.0f}%" if done else "-",
                f"{sum(p.polls for p in done) / len(done):.2f}" if done else "-",
            ]
        )
    if raw is not None:
        rows.append(
            [raw.name, len(raw.done), f"{raw.rate:.1f}", len(raw.purchases) - len(raw.done), "", "", "", "", ""]
        )
    print()
    print("milliseconds, p50 / p99")
    print(
        table(
            [
                "buyers",
                "purchases",
                "per s",
                "errors",
                "create",
                "webhook->key",
                "purchase",
                "key at 1st poll",
                "polls",
            ],
            rows,
        )
    )
    rows = []
    for level in [*levels, *([raw] if raw else [])]:
        web, worker = level.per_purchase("web"), level.per_purchase("worker")
        statements = f"{level.statements_fixed:.0f}" if level.statements_fixed else f"{web:.1f} + {worker:.1f}"
        rows.append(
            [
                level.name,
                statements,
                f"{level.per_purchase('transactions'):.1f}",
                f"{level.per_purchase('connections'):.1f}",
                *(f"{level.cpu_ms(group):.1f}" for group in CPU_GROUPS),
                f"{level.machine_busy():.0f}%",
            ]
        )
    print()
    print("per completed purchase:")
    print("  statements    SQL statements the web + worker processes sent (BEGIN / COMMIT not counted)")
    print("  transactions  committed or rolled back in the bench database (pg_stat_database)")
    print("  connections   sessions opened on the bench database (pg_stat_database)")
    print("  CPU ms        web: gunicorn; worker: Celery; pg bench db: backends on the bench database still")
    print("                connected at the end (connections opened and closed within the level are missed);")
    print("                pg cluster: the postmaster, every backend it forked (reaped ones too) and its")
    print("                background processes, whatever database they served; client: this script")
    print("  machine       share of all CPUs busy during the level, whoever used them")
    print(table(["buyers", "statements", "transactions", "connections", *CPU_GROUPS, "machine"], rows))
    if raw is not None and raw.rate:
        ratios = ", ".join(f"{level.name} buyers {raw.rate / level.rate:.0f}x" for level in levels if level.rate)
        print(f"\nraw SQL purchases per second against the API's: {ratios}")
    for level in [*levels, *([raw] if raw else [])]:
        errors = Counter(p.error for p in level.purchases if p.error)
        if errors:
            listed = "; ".join(f"{n} x {error}" for error, n in errors.most_common(5))
            print(f"errors at {level.name}: {listed}")
            if any("out_of_stock" in error for error in errors):
                print("  the product ran out of keys during this level: give more --keys")
            if "out of stock" in errors:
                print("  the raw loop's scratch table ran out of keys: give more --raw-keys")


def backend_close_wait(seconds: float = 5.0) -> None:
    """Close this script's connection and wait until its backend has exited: the postmaster counts a
    backend's CPU (here the settle's VACUUM ANALYZE) when it reaps it, and the level's "pg cluster"
    figure would otherwise take it in."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    connection.close()
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def level_order(levels: list[int], repeat: int) -> list[int]:
    """The levels `repeat` times, every other time reversed: 8,32,32,8,8,32 for [8, 32] and 3. A machine
    whose speed drifts over minutes (a shared VM) then favours no level by its place in the run."""
    order: list[int] = []
    for time_number in range(repeat):
        order += levels if time_number % 2 == 0 else levels[::-1]
    return order


def report_repeats(levels: list[Level]) -> None:
    """Each buyer count's rates in run order and their median; with two counts, their ratio run by run
    (each time's pair of levels, which ran next to each other) and its median."""
    rates: dict[str, list[float]] = {}
    for level in levels:
        rates.setdefault(level.name, []).append(level.rate)
    print()
    print("purchases per second, each time the levels ran, and the median:")
    for name, values in rates.items():
        listed = ", ".join(f"{rate:.1f}" for rate in values)
        print(f"  {name:>4} buyers: {listed}; median {statistics.median(values):.1f}")
    names = list(rates)
    if len(names) == 2:
        first, second = names
        ratios = [b / a for a, b in zip(rates[first], rates[second], strict=True) if a]
        listed = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"  {second} buyers against {first}, time by time: {listed}; median {statistics.median(ratios):.2f}")


# --- the run ---------------------------------------------------------------------------------------


def main() -> int:
    processes = Processes()
    stop = threading.Event()
    interrupt_on_signals()
    meter = None
    try:
        log(f"database {DATABASE_NAME}, broker {ARGS.broker_url}")
        database_prepare(ARGS.database_url, fresh=ARGS.fresh)
        broker = redis.Redis.from_url(ARGS.broker_url)
        broker.flushdb()
        log(f"a product with {ARGS.keys} keys")
        product = product_with_keys(keys=ARGS.keys)
        settle(SETTLE_TABLES)
        connection.close()
        port = web_start(
            processes, workers=ARGS.web_workers, threads=ARGS.web_threads, worker_class=ARGS.worker_class, env=APP_ENV
        )
        if ARGS.pool == "solo":
            # solo runs one task at a time in the process that fetched it: --concurrency of them, side by side
            for number in range(ARGS.concurrency):
                worker_start(
                    processes,
                    broker_url=ARGS.broker_url,
                    concurrency=1,
                    env=APP_ENV,
                    pool="solo",
                    label=f"celery-worker-{number}",
                )
        else:
            worker_start(
                processes, broker_url=ARGS.broker_url, concurrency=ARGS.concurrency, env=APP_ENV, pool=ARGS.pool
            )
        log(f"gunicorn on 127.0.0.1:{port} and a Celery worker are up")
        meter = Meter(processes, broker)
        purchases: list[Purchase] = []

        def run(buyers: int, seconds: float, tag: str) -> tuple[list[Purchase], float]:
            made, elapsed = buyers_run(
                buyers=buyers,
                seconds=seconds,
                port=port,
                product_pk=product.pk,
                tag=tag,
                stop=stop,
                check_alive=processes.check_alive,
            )
            purchases.extend(made)
            meter.queue_drained()
            processes.check_alive()
            return made, elapsed

        if ARGS.warmup:
            log(f"warming up: 2 buyers for {ARGS.warmup:g} s (not measured)")
            run(2, ARGS.warmup, "warmup")
        levels = []
        for buyers in level_order(ARGS.levels, ARGS.repeat):
            settle([*SETTLE_TABLES, *PURCHASE_TABLES])
            backend_close_wait()
            counts = meter.counters()
            cpu_before = meter.cpu()
            log(f"{buyers} buyer(s) for {ARGS.seconds:g} s")
            made, elapsed = run(buyers, ARGS.seconds, f"b{buyers}")
            cpu_after = meter.cpu()
            counts_after = meter.counters()
            levels.append(Level(str(buyers), made, elapsed, cpu_before, cpu_after, counts, counts_after))
            failed = sum(1 for p in made if p.error)
            log(f"{len(made) - failed} purchases, {failed} failed")

        raw = None
        if ARGS.raw:
            log(f"raw-SQL loop: {ARGS.raw_keys} keys in scratch tables, {ARGS.raw_threads} threads")
            raw_prepare(ARGS.raw_keys)
            raw = raw_run(threads=ARGS.raw_threads, seconds=ARGS.seconds, meter=meter, stop=stop)
        report(levels, raw)
        if ARGS.repeat > 1:
            report_repeats(levels)

        log("checking: keys, exactly-once delivery, ledger")
        problems = key_problems(product, purchases)
        paid = paid_orders(product)
        problems += exactly_once_problems(paid, QUANTITY)
        if raw is not None:
            problems += raw_problems()
            with connection.cursor() as cursor:
                raw_drop(cursor)
        left = CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count()
        failed = sum(1 for p in purchases if p.error)
        print()
        print(
            f"{len(purchases)} purchases started (warm-up included), {failed} failed; {len(paid)} orders paid; "
            f"{left} of {ARGS.keys} keys still available"
        )
        if problems:
            print(f"checks FAILED ({len(problems)}):")
            for problem in problems[:20]:
                print(f"  {problem}")
            return 1
        print(
            "checks passed: no key in two orders or read by two purchases, each buyer read their order's key; "
            "every paid order delivered exactly once; the ledger verifies"
            + ("; the raw loop sold each key once" if raw is not None else "")
        )
        return 2 if failed else 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (TimeoutError, RuntimeError) as error:  # a process died, or never came up, or never drained
        log(f"stopped: {error}")
        return 1
    finally:
        stop.set()
        if meter is not None:
            meter.close()
        processes.stop_all()


if __name__ == "__main__":
    sys.exit(main())
