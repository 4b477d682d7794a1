"""A realistic load, closed loop: buyers browse, check out, pay, reveal and confirm; merchants upload stock.

    .venv/bin/python bench/load.py --web-workers 2,4 --celery-workers 1,2,4 --buyers 16 --seconds 20
    .venv/bin/python bench/load.py --scale-out --web-workers 2 --celery-workers 2 --buyers 16 --seconds 20

The script starts everything itself, on PostgreSQL and Redis (the database is dropped and created again
first, only one whose name contains "bench"; the Redis db is flushed): `gunicorn config.wsgi`
(gthread) and `celery -A config worker` (prefork), with `bench.settings` (statements counted) and the
abuse limits out of reach, as bench/purchase.py does. For each pair of --web-workers and
--celery-workers it starts a fresh set of processes, warms up, then runs `--buyers` buyer threads and
`--merchants` merchant threads for `--seconds`:

- a buyer's round: browse (`GET /api/v1/products/`, then one product), checkout (`POST /api/v1/orders/`),
  pay (the sandbox provider's signed `payment.succeeded` webhook), reveal (poll `GET .../keys/` with
  `X-Order-Token` until the key is there) and confirm (`POST .../confirm/`, which releases the money);
- a merchant's round: upload 500 new keys (`POST /api/v1/merchant/products/{id}/stock/`, text/plain,
  `Authorization: Token`) and poll the upload until the worker has imported it.

It prints purchases per second, p50 / p99 per step (reveal is from the webhook sent to the key read),
errors, and where the server's time goes per purchase: CPU milliseconds of gunicorn, Celery and the
PostgreSQL cluster (from /proc; merchant uploads included) and SQL statements sent by the web and
worker processes (bench/_statements.py).

`--pgbouncer` puts PgBouncer in transaction mode (`--pool-size` server connections) between every app
process and PostgreSQL (DATABASE_TRANSACTION_POOLING=1 in their environment).

`--profile` runs cProfile around every request and task (bench/_profile.py) and prints, per role, the
functions with the most time (throughput under the profiler is not a figure).

`--scale-out` runs two groups of web processes (each --web-workers, on its own port, buyers split
between them as a load balancer would) and two Celery worker "hosts" (each --celery-workers processes,
each with its own node name, var directory and log) against the one PostgreSQL and Redis: the shape of
compose.yaml on one machine. At the end: every purchase delivered exactly once and the ledger clean
(exit 1 otherwise). Keep runs short on a shared machine: only the ratios between rows mean anything.
"""

import argparse
import http.client
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/cardshop_bench_load"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
STEPS = ("browse", "checkout", "pay", "reveal", "confirm", "upload")


def counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or min(values) < 1 or max(values) > 64:
        raise argparse.ArgumentTypeError(f"each value must be 1 to 64: {text!r}")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--web-workers", type=counts, default=[2], help="gunicorn workers per group (e.g. 2,4)")
    parser.add_argument("--web-threads", type=int, default=2, help="threads per gunicorn worker (default 2)")
    parser.add_argument("--celery-workers", type=counts, default=[2], help="Celery processes per host (e.g. 1,2,4)")
    parser.add_argument("--scale-out", action="store_true", help="two web groups and two worker hosts")
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="put PgBouncer (transaction mode) between the app processes and PostgreSQL (PGBOUNCER_BIN or on PATH)",
    )
    parser.add_argument("--pool-size", type=int, default=10, help="PgBouncer's server connections (default 10)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the web and worker processes; print where the time goes"
    )
    parser.add_argument("--buyers", type=int, default=16, help="buyer threads (default 16)")
    parser.add_argument("--merchants", type=int, default=1, help="merchant threads uploading stock (default 1)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    parser.add_argument("--keys", type=int, default=30000, help="keys in stock at the start (default 30000)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER_URL))
    args = parser.parse_args()
    if args.buyers < 1 or args.merchants < 0 or args.seconds <= 0 or args.warmup < 0 or args.keys < 100:
        parser.error("--buyers ≥ 1, --merchants ≥ 0, --seconds > 0, --warmup ≥ 0, --keys ≥ 100")
    if not args.database_url.startswith(("postgres://", "postgresql://")) or not args.broker_url.startswith("redis://"):
        parser.error("the load runs on PostgreSQL and Redis: give postgres:// and redis:// URLs")
    if "bench" not in args.database_url.rsplit("/", 1)[-1]:
        parser.error("the database is dropped first: its name must contain 'bench'")
    return args


ARGS = parse_args()
os.environ.update(
    DATABASE_URL=ARGS.database_url,
    CELERY_BROKER_URL=ARGS.broker_url,
    CELERY_TASK_ALWAYS_EAGER="0",
    DEBUG="0",
    LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
    EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    DJANGO_SETTINGS_MODULE="config.settings",
)
OUT_OF_REACH = "1000000/s"
APP_ENV = {
    "DJANGO_SETTINGS_MODULE": "bench.settings",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    "CACHE_URL": ARGS.broker_url,
    "TRUSTED_PROXIES": "127.0.0.1/32",
    "CHECKOUT_RATE_LIMIT": OUT_OF_REACH,
    "KEY_REVEAL_RATE_LIMIT": OUT_OF_REACH,
    "RESERVATION_MAX_KEYS_PER_IP": "1000000",
    # Web and worker hosts share the uploaded files (a shared volume in production).
    "MEDIA_ROOT": str(REPO_ROOT / "var" / "bench" / "media"),
}

import django  # noqa: E402
import redis  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench._harness import (  # noqa: E402
    WEBHOOK_PATH,
    Processes,
    database_prepare,
    exactly_once_problems,
    free_port,
    interrupt_on_signals,
    log,
    percentile,
    process_cpu_seconds,
    process_group,
    process_tree_cpu_seconds,
    product_with_keys,
    settle,
    wait_until,
    web_start,
    worker_start,
)
from bench._statements import STATEMENTS_KEY  # noqa: E402
from escrow.gateways.sandbox.gateway import SIGNATURE_HEADER, event_body, signature_header  # noqa: E402
from shop import services as shop_services  # noqa: E402

SECRET_NAMES = [
    "SECRET_KEY",
    "SANDBOX_WEBHOOK_SECRET",
    "CARDKEY_MASTER_KEYS",
    "CARDKEY_INDEX_KEY",
    "EVIDENCE_SIGNING_KEY",
]
SECRETS = {name: getattr(settings, name) for name in SECRET_NAMES}
PROFILE_DIR = Path(tempfile.mkdtemp(prefix="bench-profile-")) if ARGS.profile else None
PROFILING = {"BENCH_PROFILE_DIR": str(PROFILE_DIR)} if PROFILE_DIR else {}


def call(port: int, method: str, path: str, *, body: bytes | None = None, headers=None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.purchases: list[int] = []
        self.uploads = 0

    def step(self, name: str, seconds: float) -> None:
        with self.lock:
            self.latencies[name].append(seconds)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors[text] += 1


def buyer_round(port: int, product_pk: int, email: str, address: str, results: Results) -> None:
    proxied = {"X-Forwarded-For": address}
    started = time.monotonic()
    status, _ = call(port, "GET", "/api/v1/products/", headers=proxied)
    status2, _ = call(port, "GET", f"/api/v1/products/{product_pk}/", headers=proxied)
    if (status, status2) != (200, 200):
        return results.error(f"browse {status}/{status2}")
    results.step("browse", time.monotonic() - started)

    started = time.monotonic()
    status, payload = call(
        port,
        "POST",
        "/api/v1/orders/",
        body=json.dumps({"product": product_pk, "quantity": 1, "email": email}).encode(),
        headers={"Content-Type": "application/json", **proxied},
    )
    if status != 201:
        return results.error(f"checkout {status} {payload[:60]!r}")
    results.step("checkout", time.monotonic() - started)
    placed = json.loads(payload)
    order_pk, token, payment = placed["id"], placed["access_token"], placed["payment"]

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
    paid = time.monotonic()
    status, payload = call(port, "POST", WEBHOOK_PATH, body=body, headers=headers)
    if status != 200:
        return results.error(f"pay {status}")
    results.step("pay", time.monotonic() - paid)

    owner = {"X-Order-Token": token, **proxied}
    while True:
        status, payload = call(port, "GET", f"/api/v1/orders/{order_pk}/keys/", headers=owner)
        if status == 200:
            break
        if status != 409 or time.monotonic() - paid > 30:
            return results.error(f"reveal {status}")
        time.sleep(0.05)
    results.step("reveal", time.monotonic() - paid)

    started = time.monotonic()
    status, payload = call(port, "POST", f"/api/v1/orders/{order_pk}/confirm/", headers=owner)
    if status != 200:
        return results.error(f"confirm {status} {payload[:60]!r}")
    results.step("confirm", time.monotonic() - started)
    with results.lock:
        results.purchases.append(order_pk)


def merchant_round(port: int, product_pk: int, token: str, tag: str, results: Results) -> None:
    keys = "\n".join(f"LOAD-{tag}-{i:05d}" for i in range(500)).encode()
    started = time.monotonic()
    status, payload = call(
        port,
        "POST",
        f"/api/v1/merchant/products/{product_pk}/stock/",
        body=keys,
        headers={"Content-Type": "text/plain", "Authorization": f"Token {token}"},
    )
    if status != 202:
        return results.error(f"upload {status} {payload[:80]!r}")
    upload_pk = json.loads(payload)["id"]
    while True:
        status, payload = call(
            port, "GET", f"/api/v1/merchant/stock-uploads/{upload_pk}/", headers={"Authorization": f"Token {token}"}
        )
        if status == 200 and json.loads(payload)["status"] != "running":
            break
        if time.monotonic() - started > 60:
            return results.error("upload not imported in 60 s")
        time.sleep(0.1)
    results.step("upload", time.monotonic() - started)
    with results.lock:
        results.uploads += 1


def run_load(ports: list[int], product_pk: int, token: str, seconds: float, tag: str) -> tuple[Results, float]:
    results = Results()
    end = time.monotonic() + seconds

    def buyer(number: int) -> None:
        port = ports[number % len(ports)]  # the load balancer: buyers spread over the web groups
        address = f"10.1.{number // 250}.{number % 250 + 1}"
        count = 0
        while time.monotonic() < end:
            buyer_round(port, product_pk, f"{tag}-{number}-{count}@example.com", address, results)
            count += 1

    def merchant(number: int) -> None:
        count = 0
        while time.monotonic() < end:
            merchant_round(ports[number % len(ports)], product_pk, token, f"{tag}-{number}-{count}", results)
            count += 1

    threads = [threading.Thread(target=buyer, args=(n,), daemon=True) for n in range(ARGS.buyers)]
    threads += [threading.Thread(target=merchant, args=(n,), daemon=True) for n in range(ARGS.merchants)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.monotonic() - started


def server_cpu(processes: Processes, postmaster: int | None) -> dict[str, float]:
    """CPU seconds so far of the web processes, the Celery processes and the whole PostgreSQL cluster."""
    totals = {"web": 0.0, "worker": 0.0, "pg": 0.0}
    for name, process in processes.running:
        role = "web" if name.startswith("web") else "worker" if name.startswith("worker") else "pg"
        totals[role] += sum(process_cpu_seconds(process_group(process.pid)).values())
    if postmaster:
        totals["pg"] = process_tree_cpu_seconds(postmaster)
    return totals


def statements(broker: redis.Redis) -> dict[str, int]:
    """SQL statements sent so far, by role (bench/_statements.py, published every 0.2 s)."""
    time.sleep(0.5)
    totals = {"web": 0, "worker": 0}
    for field, value in broker.hgetall(STATEMENTS_KEY).items():
        role = field.decode().split(":", 1)[0]
        if role in totals:
            totals[role] += int(value)
    return totals


def postmaster_pid() -> int | None:
    from django.db import connection

    from bench._harness import parent_pid, process_name

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    return parent_pid(backend) if process_name(backend) == "postgres" else None


def pgbouncer_start(processes: Processes) -> str:
    """PgBouncer in transaction mode on a free port, in front of the bench database; returns its URL."""
    import dj_database_url

    binary = os.environ.get("PGBOUNCER_BIN") or shutil.which("pgbouncer")
    if not binary:
        raise SystemExit("--pgbouncer: no pgbouncer on PATH (or set PGBOUNCER_BIN)")
    config = dj_database_url.parse(ARGS.database_url)
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-pgbouncer-"))
    folder.chmod(stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)  # it drops root (-u nobody) and writes here
    name, user = config["NAME"], config["USER"]
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{name} = host={config['HOST'] or '127.0.0.1'} port={config['PORT'] or 5432} "
        f"dbname={name} user={user}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = any\n"
        f"pool_mode = transaction\ndefault_pool_size = {ARGS.pool_size}\nmax_client_conn = 1000\n"
        f"unix_socket_dir =\nlogfile = {folder}/pgbouncer.log\npidfile = {folder}/pgbouncer.pid\n"
    )
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]  # PgBouncer refuses to run as root
    processes.start("pgbouncer", command)
    url = f"postgres://{user}@127.0.0.1:{port}/{name}"

    def answers() -> bool:
        import psycopg2

        processes.check_alive()
        try:
            psycopg2.connect(url).close()
            return True
        except psycopg2.OperationalError:
            return False

    wait_until(answers, seconds=20, what="PgBouncer to answer")
    return url


def profile_report(folder: Path) -> None:
    """Merge each role's profiles and print the functions with the most time of their own and in total."""
    import pstats

    for role in ("web", "worker"):
        files = sorted(str(path) for path in folder.glob(f"{role}-*.prof"))
        if not files:
            continue
        stats = pstats.Stats(*files)
        for order, title in (("tottime", "own time"), ("cumulative", "time including callees")):
            print(f"\n=== {role} processes: top 25 functions by {title} ({len(files)} processes) ===")
            stats.sort_stats(order).print_stats(25)


def start_servers(processes: Processes, *, web_workers: int, celery_workers: int) -> list[int]:
    pooled = {}
    if ARGS.pgbouncer:
        pooled = {"DATABASE_URL": pgbouncer_start(processes), "DATABASE_TRANSACTION_POOLING": "1"}
    groups = 2 if ARGS.scale_out else 1
    ports = []
    for group in range(groups):
        # Each "host" has its own settings: its own var directory (local files, beat schedule) and name.
        # The secrets come from the environment, the same on every host, as in production.
        host_env = {
            **APP_ENV,
            **SECRETS,
            **pooled,
            **PROFILING,
            "SHOP_VAR_DIR": str(REPO_ROOT / "var" / "bench" / f"host-{group}"),
        }
        ports.append(
            web_start(processes, workers=web_workers, threads=ARGS.web_threads, env=host_env, name=f"web-{group}")
        )
        worker_start(
            processes,
            broker_url=ARGS.broker_url,
            concurrency=celery_workers,
            env=host_env,
            label=f"worker-{group}",
        )
    return ports


def main() -> int:
    interrupt_on_signals()
    broker = redis.Redis.from_url(ARGS.broker_url)
    broker.flushdb()
    database_prepare(ARGS.database_url, fresh=True)
    product = product_with_keys(keys=ARGS.keys)
    merchant = product.merchant
    _record, token = shop_services.merchant_api_token_create_unchecked(
        merchant=merchant, name="load", actor=None, now=timezone.now()
    )
    settle(["shop_cardkey", "shop_product", "shop_merchant", "accounts_user"])
    postmaster = postmaster_pid()
    rows = []
    all_purchases: list[int] = []
    for web_workers in ARGS.web_workers:
        for celery_workers in ARGS.celery_workers:
            processes = Processes()
            try:
                label = f"{'2x' if ARGS.scale_out else ''}{web_workers} web / {'2x' if ARGS.scale_out else ''}"
                label += f"{celery_workers} celery" + (" + PgBouncer" if ARGS.pgbouncer else "")
                log(f"starting {label}")
                ports = start_servers(processes, web_workers=web_workers, celery_workers=celery_workers)
                tag = f"w{web_workers}c{celery_workers}t{int(time.time())}"
                warm, _ = run_load(ports, product.pk, token, ARGS.warmup, tag + "warm")
                all_purchases += warm.purchases
                cpu_before, sql_before = server_cpu(processes, postmaster), statements(broker)
                results, elapsed = run_load(ports, product.pk, token, ARGS.seconds, tag)
                cpu_after, sql_after = server_cpu(processes, postmaster), statements(broker)
                processes.check_alive()
            finally:
                processes.stop_all()
            all_purchases += results.purchases
            purchases = max(1, len(results.purchases))
            cpu = {role: 1000 * (cpu_after[role] - cpu_before[role]) / purchases for role in cpu_after}
            row = {
                "config": label,
                "purchases/s": len(results.purchases) / elapsed,
                "uploads": results.uploads,
                "errors": sum(results.errors.values()),
                "cpu ms/purchase": sum(cpu.values()),
                "cpu web/worker/pg": "/".join(f"{cpu[role]:.0f}" for role in ("web", "worker", "pg")),
                "sql web/worker": "/".join(
                    f"{(sql_after[role] - sql_before[role]) / purchases:.0f}" for role in ("web", "worker")
                ),
            }
            for step in STEPS:
                values = results.latencies.get(step)
                row[step] = (
                    f"{1000 * percentile(values, 50):.0f} / {1000 * percentile(values, 99):.0f}" if values else "-"
                )
            rows.append(row)
            log(json.dumps(row))
            if results.errors:
                log(f"errors: {dict(results.errors)}")

    header = [
        "config",
        "purchases/s",
        *[f"{step} p50/p99 ms" for step in STEPS],
        "uploads",
        "errors",
        "CPU ms/purchase",
        "of it web/worker/pg",
        "SQL/purchase web/worker",
    ]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row["config"], f"{row['purchases/s']:.1f}", *[row[step] for step in STEPS]]
        cells += [str(row["uploads"]), str(row["errors"]), f"{row['cpu ms/purchase']:.0f}"]
        cells += [row["cpu web/worker/pg"], row["sql web/worker"]]
        print("| " + " | ".join(cells) + " |")

    if PROFILE_DIR:
        profile_report(PROFILE_DIR)

    problems = exactly_once_problems(all_purchases, 1)
    # Confirmed purchases are completed, not delivered: exactly_once_problems checks "delivered".
    problems = [p for p in problems if "is completed, not delivered" not in p]
    if problems:
        print("\nPROBLEMS:\n" + "\n".join(problems[:20]))
        return 1
    print(f"\nchecks: {len(all_purchases)} purchases, each delivered exactly once; the ledger is clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
