"""What the end-to-end benchmarks share: a database, gunicorn and a Celery worker started and stopped
by the script, CPU readings from /proc, percentiles, and the exactly-once check.

Imported after the script has set the environment (DATABASE_URL, CELERY_BROKER_URL, ...) and called
`django.setup()`; the few helpers that touch Django import it inside, so that importing this module
itself needs no settings.
"""

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = REPO_ROOT / ".venv" / "bin"
LOG_DIR = REPO_ROOT / "var" / "bench"
WEBHOOK_PATH = "/payments/sandbox/webhook/"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(check, *, seconds: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + seconds
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(interval)
    return result


def interrupt_on_signals() -> None:
    """SIGTERM (a supervisor, `kill`) and SIGINT unwind as KeyboardInterrupt, through the `finally` that
    stops the children. Set explicitly: a shell that starts the script in the background would
    otherwise ignore SIGINT."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


# --- the database ----------------------------------------------------------------------------------


def _server_connection(url: str):
    import dj_database_url
    import psycopg2

    config = dj_database_url.parse(url)
    server = psycopg2.connect(
        dbname="postgres",
        user=config["USER"],
        password=config["PASSWORD"] or None,
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
    )
    server.autocommit = True
    return server, config["NAME"]


def database_prepare(url: str, *, fresh: bool = False) -> None:
    """Create the benchmark's database if it is missing (dropped first when `fresh`), then migrate it.

    Only the database named by `url` is ever dropped; the caller decides that it is a benchmark's own.
    """
    from django.core.management import call_command
    from django.db import connections
    from psycopg2 import sql

    connections.close_all()
    server, name = _server_connection(url)
    try:
        with server.cursor() as cursor:
            if fresh:
                log(f"dropping and recreating database {name}")
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                if not fresh:
                    log(f"creating database {name}")
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        server.close()
    call_command("migrate", interactive=False, verbosity=0)


def settle(tables: list[str]) -> None:
    """Flush and analyse what the set-up wrote, so that its I/O does not land in the measured window."""
    from django.db import connection

    log("settling: VACUUM ANALYZE of the tables the set-up filled, then CHECKPOINT")
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute("CHECKPOINT")


def product_with_keys(*, keys: int, max_per_order: int = 10):
    """A new approved merchant and one product of theirs with `keys` keys in stock, through the services."""
    from django.utils import timezone

    from accounts.models import User
    from shop import services as shop_services
    from shop.models import MerchantStatus

    now = timezone.now()
    tag = uuid.uuid4().hex[:8]
    user = User.objects.create_user(username=f"bench-{tag}", email=f"bench-{tag}@example.com", password=None)
    merchant = shop_services.merchant_create(user=user, name=f"Bench {tag}", now=now, status=MerchantStatus.APPROVED)
    product = shop_services.product_create(
        merchant=merchant,
        title=f"Bench card {tag}",
        price=1000,
        currency="CNY",
        now=now,
        max_per_order=max_per_order,
    )
    for start in range(0, keys, 1000):
        batch = [f"BENCH-{tag}-{i:07d}" for i in range(start, min(start + 1000, keys))]
        shop_services.keys_import_batch(product=product, keys=batch, now=now)
    return product


def buyer_address(number: int) -> str:
    """The `number`-th buyer's address, each in a /24 of its own (`core.device.network_of`'s network), as
    ordinary buyers are: no two checkouts of a run share an address or a network, so no velocity rule
    counts one buyer's checkouts against another's. Distinct for the first 7 million numbers."""
    return f"{10 + number // 62500}.{number // 250 % 250}.{number % 250}.7"


# --- the risk engine, off and on ----------------------------------------------------------------------


def _order_place_unassessed(*, risk_context, challenge_passed=False, rate=None, **order):
    """The checkout without the engine: the rate limit's attempt counted by its own command first, as
    the shop counts it where no engine command carries it."""
    from escrow import services

    if rate is not None:
        rate.count()
    return services.order_place(**order)


def _no_risk_context(request, **fields):
    """What the engine-off side builds instead of a request's context (nothing: the checkout ignores it,
    and anything else still assessed there gets an act without identities)."""
    from risk import RiskContext

    return RiskContext()


_RISK_ON: list = []  # the shop's own checkout and context, saved the first time the engine is set


def risk_engine_set(on: bool) -> None:
    """Take the risk engine off the checkout (or put it back), as `bench/wsgi_risk_off.py` serves it:
    no context built from the request, no assessment. Only benchmarks call this; the shop has no switch."""
    import risk
    from escrow import services

    if not _RISK_ON:
        _RISK_ON[:] = [services.order_place_assessed, risk.context_from_request]
    if on:
        services.order_place_assessed, risk.context_from_request = _RISK_ON
    else:
        services.order_place_assessed, risk.context_from_request = _order_place_unassessed, _no_risk_context


# --- CPU from /proc --------------------------------------------------------------------------------


def cpu_times() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of every CPU since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def cpu_busy_percent(seconds: float = 1.0) -> float:
    """How busy all CPUs are over `seconds`: anything else running skews the figures."""
    try:
        total_a, idle_a = cpu_times()
        time.sleep(seconds)
        total_b, idle_b = cpu_times()
    except OSError:
        return 0.0
    return 100.0 * (1 - (idle_b - idle_a) / max(1, total_b - total_a))


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces): [0] is the state."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu_seconds(pids) -> dict[int, float]:
    """User + system CPU seconds of each process still alive (threads included)."""
    seconds = {}
    for pid in pids:
        fields = _proc_stat(pid)
        if fields is not None:
            seconds[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return seconds


def process_group(pgid: int) -> list[int]:
    """Every live process in a process group (a started command with all its children)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(int(entry))) is not None and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def process_tree_cpu_seconds(parent: int) -> float:
    """CPU seconds of a process, of its live children, and of the children it has already reaped
    (cutime, cstime): a server that forks a process per connection, counted whole."""
    fields = _proc_stat(parent)
    if fields is None:
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (child := _proc_stat(int(entry))) is not None and int(child[1]) == parent:
            ticks += int(child[11]) + int(child[12])
    return ticks / CLOCK_TICKS


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def parent_pid(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[1]) if fields is not None else None


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings; a process that appeared in between counts from zero (one that
    ended in between is lost, so callers keep processes alive across a window)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


# --- the processes under test ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Processes:
    """The subprocesses this run started; each in its own session, so a group kill takes its children."""

    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with (LOG_DIR / f"{name}.log").open("wb") as out:
            process = subprocess.Popen(  # fixed argv from our own venv
                command,
                cwd=REPO_ROOT,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append((name, process))
        return process

    def pgid(self, name: str) -> int:
        """The process group of a started command (its pid: each starts its own session)."""
        return next(process.pid for started, process in self.running if started == name)

    def check_alive(self) -> None:
        for name, process in self.running:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {LOG_DIR / (name + '.log')}")

    def stop_all(self) -> None:
        for _, process in self.running:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for name, process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; killing it")
            # Whatever is left of the group (pool children, gunicorn workers) goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.running.clear()


def web_start(
    processes: Processes,
    *,
    workers: int,
    threads: int,
    worker_class: str = "gthread",
    env: dict[str, str] | None = None,
    name: str = "gunicorn",
    app: str = "config.wsgi",
) -> int:
    """`gunicorn config.wsgi` (or `app`) on a free loopback port, once it answers; returns the port."""
    port = free_port()
    processes.start(
        name,
        [
            str(VENV_BIN / "gunicorn"),
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            worker_class,
            "--log-level",
            "warning",
        ],
        env=env,
    )

    def answers() -> bool:
        processes.check_alive()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", WEBHOOK_PATH)
            return conn.getresponse().status == 405  # the webhook takes POST only: the app is up
        except OSError:
            return False
        finally:
            conn.close()

    wait_until(answers, seconds=30, what="gunicorn to answer")
    return port


def worker_start(
    processes: Processes,
    *,
    broker_url: str,
    concurrency: int,
    env: dict[str, str] | None = None,
    label: str = "celery-worker",
    pool: str = "prefork",
) -> None:
    """`celery -A config worker` (prefork unless `pool` says otherwise), once it answers a ping."""
    from celery import Celery

    name = f"bench-{uuid.uuid4().hex[:8]}@localhost"
    processes.start(
        label,
        [
            str(VENV_BIN / "celery"),
            "-A",
            "config",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "-l",
            "warning",
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env=env,
    )
    probe = Celery("bench-probe", broker=broker_url, set_as_current=False)
    try:

        def pong() -> bool:
            processes.check_alive()
            return bool(probe.control.ping(destination=[name], timeout=0.5))

        wait_until(pong, seconds=30, what="the Celery worker to answer a ping", interval=0)
    finally:
        probe.close()


# --- results ---------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[rank]


def exactly_once_problems(order_pks: list[int], quantity: int) -> list[str]:
    """Every order delivered exactly once (delivered, `quantity` sold keys, one `order.delivered` audit
    line, one webhook event, one payment transfer) and the ledger's invariants hold; empty if so."""
    from django.db.models import Count, Q

    from accounts.models import AuditEntry
    from escrow.ledger_checks import ledger_problems
    from escrow.models import Order, OrderStatus, Transfer, WebhookEvent
    from shop.models import CardKeyStatus

    pks = order_pks
    problems = []
    orders = Order.objects.filter(pk__in=pks).annotate(
        sold=Count("card_keys", filter=Q(card_keys__status=CardKeyStatus.SOLD), distinct=True),
        keys=Count("card_keys", distinct=True),
    )
    for order in orders:
        if order.status != OrderStatus.DELIVERED:
            problems.append(f"order {order.pk} is {order.status}, not delivered")
        if order.sold != quantity or order.keys != quantity:
            problems.append(f"order {order.pk} has {order.sold} sold keys of {order.keys}, not {quantity}")
    audits = dict(
        AuditEntry.objects.filter(
            action="order.delivered", subject_type="escrow.order", subject_id__in=[str(pk) for pk in pks]
        )
        .values_list("subject_id")
        .annotate(n=Count("pk"))
    )
    problems += [
        f"order {pk}: {audits.get(str(pk), 0)} 'order.delivered' audit lines" for pk in pks if audits.get(str(pk)) != 1
    ]
    events = dict(
        WebhookEvent.objects.filter(payment__order__in=pks).values_list("payment__order").annotate(n=Count("pk"))
    )
    problems += [f"order {pk}: {events.get(pk, 0)} webhook events" for pk in pks if events.get(pk) != 1]
    payments = dict(Transfer.objects.filter(order__in=pks, code="payment").values_list("order").annotate(n=Count("pk")))
    problems += [f"order {pk}: {payments.get(pk, 0)} payment transfers" for pk in pks if payments.get(pk) != 1]
    problems += [f"ledger: {problem}" for problem in ledger_problems()]
    return problems
