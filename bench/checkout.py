"""Checkout throughput through the API with the audit hash chain on, against the same run with it off
(issue 11); with `--compare risk`, with the risk engine on against off (issue 12).

    .venv/bin/python bench/checkout.py --buyers 8 --seconds 20 --rounds 2
    .venv/bin/python bench/checkout.py --compare risk --buyers 8 --seconds 20 --rounds 2

`--compare risk`: the chain is on in both modes; "off" serves `bench/wsgi_risk_off.py` (the checkout
without its assessment, nor its context), "on" the shop as it is, with the shipped rules and velocity
in Redis. `bench/risk_assess.py --throughput` runs the same.

Each checkout is `POST /api/v1/orders/` (one key reserved, one order, one payment, one `order.placed`
audit entry), by `--buyers` closed-loop buyers (threads), over a new connection per request, against
`gunicorn config.wsgi` (`--web-workers` x `--web-threads`, gthread) on PostgreSQL, with the abuse
limits out of reach (one buyer here checks out far faster than a person). Every checkout of the run
is a new buyer: its own e-mail and its own address (X-Forwarded-For, the script trusted as the proxy)
in a /24 network of its own (`bench._harness.buyer_address`), as ordinary buyers are, so the shipped
velocity rules let them all through (a refused checkout is cheaper, not dearer) and no round inherits
an earlier one's counts.

A sealer process calls `audit_chain_seal` every `--seal-interval` seconds (default 1 s: ten times as
often as the beat schedule's 10 s, so its cost is overstated if anything). Chain on:
`AUDIT_CHAIN_ENABLED=1`; chain off: `AUDIT_CHAIN_ENABLED=0`, and the same sealer finds nothing to do.
The checkout path itself is the same either way (an entry is a plain insert in the checkout's
transaction; the chain is built afterwards), so the difference is what sealing costs the checkouts
running beside it.

On a shared machine the load of others moves from second to second, so the two modes alternate
(off, on, then on, off, … `--rounds` times each, after an unmeasured warm-up). Each round starts
equal: a product of its own (`--keys` keys, stocked before the first round, so no round takes keys
from an index an earlier round left full of dead entries), freshly vacuumed tables and an empty Redis
database. The script prints each round (with its answers other than 201: 403 refusals by the risk
engine, and the rest), the median per mode, the cost (1 - on/off) of the medians and pair by pair,
with the CPU milliseconds per checkout (from /proc) of gunicorn (all workers), the sealer, the
PostgreSQL cluster (when it runs here: the postmaster and every backend it forked), the Redis server
and this script (the buyers), which a busy machine moves far less than it moves throughput. At the
end it seals what is left and walks the chain (`verify_audit`'s check): exit 1 if it is broken or if
any order lacks its one `order.placed` entry; exit 2 if a round ran out of keys (409: the warm-up takes
keys too; give more `--keys`), as such a round's rate compares nothing. The database (name must
contain "bench") is dropped and created first; the Redis database (cache and broker: the order
e-mails are queued there, no worker runs) is flushed. Subprocess output goes to var/bench/.

`--compare risk --interleave PAIRS [--slice-seconds 4]` measures the same with far less noise: both
servers run at once and the buyers switch between them every few seconds (`interleaved`). Rounds a
minute apart drift by ±15 % on a 2-core machine (the host, others' load), so four pairs of rounds
could read anything from 5 % to 28 % for one commit; twenty pairs of 4 s slices give the cost with a
standard error of 1 to 2 points in under four minutes. Run with the same server on both sides (an
"A/A" check), it read -3.3 % (standard error 2.0).
"""

import argparse
import http.client
import itertools
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/cardshop_bench_checkout"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
ORDERS_PATH = "/api/v1/orders/"


# What a checkout writes (and the risk engine with it), vacuumed before every round.
ROUND_TABLES = [
    "shop_cardkey",
    "escrow_order",
    "escrow_payment",
    "accounts_auditentry",
    "risk_decision",
    "risk_seenidentity",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buyers", type=int, default=8, help="concurrent buyers (default 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per round (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode, alternating (default 2)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first (default 5)")
    parser.add_argument("--keys", type=int, default=20000, help="keys of each round's product (default 20000)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--web-threads", type=int, default=2, help="threads per gunicorn worker (default 2)")
    parser.add_argument(
        "--worker-class",
        choices=["gthread", "sync"],
        default="gthread",
        help="gunicorn worker class (default gthread; the shop is deployed with 4 sync workers)",
    )
    parser.add_argument("--compare", choices=["chain", "risk"], default="chain", help="what is on and off")
    parser.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="PAIRS",
        help="with --compare risk: both servers up at once, the load switched between them in PAIRS pairs of "
        "short slices (instead of --rounds)",
    )
    parser.add_argument("--slice-seconds", type=float, default=4.0, help="seconds per slice with --interleave")
    parser.add_argument(
        "--same-app",
        action="store_true",
        help="with --interleave: the 'on' server serves the engine-off app too (an A/A check: what the "
        "comparison reads when nothing differs, its bias and noise)",
    )
    parser.add_argument("--seal-interval", type=float, default=1.0, help="seconds between two seals (default 1)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args()
    if min(args.buyers, args.rounds, args.keys, args.web_workers, args.web_threads) < 1:
        parser.error("--buyers, --rounds, --keys, --web-workers and --web-threads must be at least 1")
    if args.seconds <= 0 or args.seal_interval <= 0 or args.warmup < 0:
        parser.error("--seconds and --seal-interval must be above 0, --warmup at least 0")
    if args.interleave < 0 or args.slice_seconds <= 0:
        parser.error("--interleave must be at least 0 and --slice-seconds above 0")
    if args.same_app and not args.interleave:
        parser.error("--same-app goes with --interleave")
    if args.interleave and args.compare != "risk":
        parser.error("--interleave compares the risk engine: give --compare risk")
    if not args.database_url.startswith(("postgres://", "postgresql://")) or not args.redis_url.startswith("redis://"):
        parser.error("the benchmark runs on PostgreSQL and Redis: give postgres:// and redis:// URLs")
    if "bench" not in args.database_url.rsplit("/", 1)[-1]:
        parser.error("the database is dropped first, and its name has no 'bench' in it")
    return args


ARGS = parse_args()
os.environ.update(
    DATABASE_URL=ARGS.database_url,
    CELERY_BROKER_URL=ARGS.redis_url,
    CELERY_TASK_ALWAYS_EAGER="0",
    DEBUG="0",
    LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
    EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    DJANGO_SETTINGS_MODULE="config.settings",
)
OUT_OF_REACH = "1000000/s"
APP_ENV = {
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    "CACHE_URL": ARGS.redis_url,
    "TRUSTED_PROXIES": "127.0.0.1/32",
    "CHECKOUT_RATE_LIMIT": OUT_OF_REACH,
    "RESERVATION_MAX_KEYS_PER_IP": "1000000",
    "RESERVATION_MAX_KEYS_PER_EMAIL": "1000000",
}
SEALER = """
import os, sys, time, django
django.setup()
from accounts.services import audit_chain_seal
interval = float(sys.argv[1])
print("ready", flush=True)
while True:
    started = time.monotonic()
    audit_chain_seal()
    time.sleep(max(0.0, interval - (time.monotonic() - started)))
"""

import django  # noqa: E402
import redis  # noqa: E402

django.setup()

from bench._harness import (  # noqa: E402
    LOG_DIR,
    VENV_BIN,
    Processes,
    buyer_address,
    cpu_busy_percent,
    cpu_used,
    database_prepare,
    interrupt_on_signals,
    log,
    parent_pid,
    process_cpu_seconds,
    process_group,
    process_name,
    process_tree_cpu_seconds,
    product_with_keys,
    settle,
    wait_until,
    web_start,
)


def checkout(port: int, product_pk: int, email: str, address: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            ORDERS_PATH,
            body=json.dumps({"product": product_pk, "quantity": 1, "email": email}).encode(),
            headers={"Content-Type": "application/json", "X-Forwarded-For": address},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


BUYERS = itertools.count()  # every checkout of the run a new buyer (next() is atomic under the GIL)
RUN = uuid.uuid4().hex[:6]


def buyers_run(*, port: int, product_pk: int, seconds: float) -> tuple[int, Counter, float]:
    """(checkouts answered 201, the other answers by status (0: no answer), elapsed seconds) of
    `ARGS.buyers` closed loops, each checkout by a new buyer."""
    created, other = [0] * ARGS.buyers, [Counter() for _ in range(ARGS.buyers)]
    start = time.monotonic()
    end = start + seconds

    def buyer(number: int) -> None:
        while time.monotonic() < end:
            buyer = next(BUYERS)
            status = checkout(port, product_pk, f"{RUN}-{buyer}@example.com", buyer_address(buyer))
            if status == 201:
                created[number] += 1
            else:
                other[number][status] += 1

    threads = [threading.Thread(target=buyer, args=(n,), daemon=True) for n in range(ARGS.buyers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(created), sum(other, Counter()), time.monotonic() - start


def main() -> int:
    interrupt_on_signals()
    redis.Redis.from_url(ARGS.redis_url).flushdb()
    database_prepare(ARGS.database_url, fresh=True)
    if ARGS.interleave:
        return interleaved()
    pairs = [("off", "on") if round_number % 2 == 0 else ("on", "off") for round_number in range(ARGS.rounds)]
    log(f"stocking {2 * ARGS.rounds} products (one per round and mode) with {ARGS.keys} keys each")
    products = [product_with_keys(keys=ARGS.keys, max_per_order=1) for _ in range(2 * ARGS.rounds)]
    results: dict[str, list[float]] = {"off": [], "on": []}
    refused: dict[str, list[int]] = {"off": [], "on": []}
    sold_out: list[str] = []  # rounds that answered 409 (out of stock): their rates compare nothing
    cpu_ms: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    processes = Processes()
    postmaster, servers = servers_here()
    try:
        for round_number, pair in enumerate(pairs):
            # Each round takes thousands of keys, leaving as many dead rows behind in the key table and its
            # indexes (a reservation moves a key out of the partial index of available ones): on one
            # product the rate fell by a third from one round to the next however the modes were set, and
            # whichever mode ran second in a pair lost. So every round has a product of its own and starts
            # from vacuumed tables and an empty Redis, and the modes take turns at going first (off-on,
            # on-off, …). The tables are vacuumed and analysed after the warm-up, as autovacuum (off on
            # this machine's PostgreSQL) would have done as they grew: the first round with the engine on
            # otherwise ran on the statistics of empty risk tables, and its sessions' prepared statements
            # kept plans made for a table of one page (twice the PostgreSQL CPU per checkout).
            for mode in pair:
                product = products.pop()
                redis.Redis.from_url(ARGS.redis_url).flushdb()  # velocity windows, throttles, queued e-mails
                app = "config.wsgi"
                if ARGS.compare == "chain":
                    env = {**APP_ENV, "AUDIT_CHAIN_ENABLED": "1" if mode == "on" else "0"}
                else:
                    env = {**APP_ENV, "AUDIT_CHAIN_ENABLED": "1"}
                    app = "config.wsgi" if mode == "on" else "bench.wsgi_risk_off"
                port = web_start(
                    processes,
                    workers=ARGS.web_workers,
                    threads=1 if ARGS.worker_class == "sync" else ARGS.web_threads,
                    worker_class=ARGS.worker_class,
                    env=env,
                    app=app,
                )
                processes.start("sealer", [str(VENV_BIN / "python"), "-c", SEALER, str(ARGS.seal_interval)], env=env)
                wait_until(
                    lambda: processes.check_alive() or "ready" in (LOG_DIR / "sealer.log").read_text(),
                    seconds=60,
                    what="the sealer to start",
                )
                if ARGS.warmup:
                    buyers_run(port=port, product_pk=product.pk, seconds=ARGS.warmup)
                settle(ROUND_TABLES)
                busy = cpu_busy_percent(0.5)
                groups = {name: process_group(processes.pgid(name)) for name in ("gunicorn", "sealer")}
                groups.update(servers)
                before = {name: process_cpu_seconds(pids) for name, pids in groups.items()}
                cluster_before = process_tree_cpu_seconds(postmaster) if postmaster else 0.0
                created, other, elapsed = buyers_run(port=port, product_pk=product.pk, seconds=ARGS.seconds)
                processes.check_alive()
                spent = {name: cpu_used(before[name], process_cpu_seconds(pids)) for name, pids in groups.items()}
                if postmaster:
                    spent["postgres"] = process_tree_cpu_seconds(postmaster) - cluster_before
                rate = created / elapsed
                results[mode].append(rate)
                refused[mode].append(other[403])
                if other[409]:
                    sold_out.append(f"round {round_number + 1} {mode}")
                per = {name: 1000 * seconds / max(1, created) for name, seconds in spent.items()}
                cpu_ms[mode].append(per)
                rest = ", ".join(f"{count} answered {status or 'nothing'}" for status, count in sorted(other.items()))
                log(
                    f"round {round_number + 1} {ARGS.compare} {mode:>3}: {rate:7.1f} checkouts/s "
                    f"({created} in {elapsed:.1f} s; {other[403]} refused (403), others: {rest or 'none'}; "
                    f"machine {busy:.0f}% busy before); "
                    f"CPU per checkout: web {per['gunicorn']:.1f} ms, sealer {per['sealer']:.2f} ms, "
                    + ", ".join(f"{name} {per[name]:.2f} ms" for name in ("postgres", "redis", "client") if name in per)
                )
                processes.stop_all()
    finally:
        processes.stop_all()

    orders, missing, report = chain_check()
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print()
    threads = 1 if ARGS.worker_class == "sync" else ARGS.web_threads
    print(f"buyers {ARGS.buyers}, gunicorn {ARGS.web_workers}x{threads} {ARGS.worker_class}, {ARGS.seconds:g} s rounds")
    what = {"chain": "chain", "risk": "risk engine"}[ARGS.compare]
    print(f"{what} off: median {off:.1f} checkouts/s  (rounds: {', '.join(f'{r:.1f}' for r in results['off'])})")
    print(f"{what} on:  median {on:.1f} checkouts/s  (rounds: {', '.join(f'{r:.1f}' for r in results['on'])})")
    print(f"cost of the {what}: {100 * (1 - on / off):+.1f} % of throughput (limit: 10 %)" if off else "no checkouts")
    by_pair = [1 - on / off for off, on in zip(results["off"], results["on"], strict=True) if off]
    print(f"cost pair by pair: {', '.join(f'{100 * cost:+.1f} %' for cost in by_pair)}")
    print(f"refused (403) per round: off {refused['off']}, on {refused['on']}")
    for mode in ("off", "on"):
        medians = {name: statistics.median(r[name] for r in cpu_ms[mode]) for name in cpu_ms[mode][0]}
        print(
            f"CPU ms per checkout, {what} {mode:>3} (medians): web {medians.pop('gunicorn'):.2f}, "
            + ", ".join(f"{name} {value:.2f}" for name, value in medians.items())
        )
    return run_end(orders=orders, missing=missing, report=report, sold_out=sold_out)


def servers_here() -> tuple[int | None, dict[str, list[int]]]:
    """The servers on this machine, counted whole: PostgreSQL's postmaster (None when it runs elsewhere),
    whose every backend it forked (reaped ones too) counts; Redis (velocity, limits); and this script
    (the buyers)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    postmaster = parent_pid(backend) if process_name(backend) == "postgres" else None
    connection.close()
    redis_pid = redis.Redis.from_url(ARGS.redis_url).info("server").get("process_id")
    return postmaster, {"client": [os.getpid()], **({"redis": [redis_pid]} if process_name(redis_pid or 0) else {})}


def chain_check():
    """(orders, orders without exactly one `order.placed` entry, the chain's report), after a last seal."""
    from django.db.models import Count

    from accounts.audit_chain import chain_verify
    from accounts.models import AuditEntry
    from accounts.services import audit_chain_seal
    from escrow.models import Order

    audit_chain_seal()
    report = chain_verify()
    orders = Order.objects.count()
    placed = AuditEntry.objects.filter(action="order.placed").values("subject_id").annotate(n=Count("pk"))
    return orders, orders - sum(1 for row in placed if row["n"] == 1), report


def run_end(*, orders: int, missing: int, report, sold_out: list[str]) -> int:
    print(f"audit chain: {report.sealed} entries sealed, {orders} orders, problem: {report.problem or 'none'}")
    if report.problem or missing:
        print(f"FAILED: {missing} orders without exactly one order.placed entry; chain: {report.problem}")
        return 1
    if sold_out:
        # A mode that runs its product dry answers cheap 409s for the rest of its round: the faster mode
        # loses checkouts it would have made, and the comparison reads too kind to the slower one.
        print(f"NOT COMPARABLE: {', '.join(sold_out)} ran out of keys (409 out of stock): give more --keys")
        return 2
    return 0


def interleaved() -> int:
    """`--interleave PAIRS`: the engine-on and engine-off servers both up at once (each `--web-workers`,
    one product each with `--keys` keys), warmed up, then the buyers switched from one to the other
    every `--slice-seconds`, in pairs that take turns at going first (off-on, on-off, …). A server
    without load sleeps, so each slice has the machine to itself as a round does; but the two slices of
    a pair are seconds apart, not a minute, so the machine's drift (others' load, the host, the tables
    growing) moves both alike. Prints the cost pooled over all slices (1 - on rate / off rate), the
    median and quartiles of the pairs' costs, and the CPU per checkout of each mode."""
    turns = (("off", "on"), ("on", "off"))
    slices = [mode for number in range(ARGS.interleave) for mode in turns[number % 2]]
    log(f"stocking 2 products (one per mode) with {ARGS.keys} keys each")
    products = {mode: product_with_keys(keys=ARGS.keys, max_per_order=1) for mode in ("off", "on")}
    postmaster, servers = servers_here()
    processes = Processes()
    env = {**APP_ENV, "AUDIT_CHAIN_ENABLED": "1"}
    threads = 1 if ARGS.worker_class == "sync" else ARGS.web_threads
    created: dict[str, list[int]] = {"off": [], "on": []}
    elapsed: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, Counter] = {"off": Counter(), "on": Counter()}
    sold_out: list[str] = []
    try:
        ports = {
            mode: web_start(
                processes,
                workers=ARGS.web_workers,
                threads=threads,
                worker_class=ARGS.worker_class,
                env=env,
                name=f"gunicorn-{mode}",
                app="config.wsgi" if mode == "on" and not ARGS.same_app else "bench.wsgi_risk_off",
            )
            for mode in ("off", "on")
        }
        processes.start("sealer", [str(VENV_BIN / "python"), "-c", SEALER, str(ARGS.seal_interval)], env=env)
        wait_until(
            lambda: processes.check_alive() or "ready" in (LOG_DIR / "sealer.log").read_text(),
            seconds=60,
            what="the sealer to start",
        )
        for mode in ("off", "on"):
            buyers_run(port=ports[mode], product_pk=products[mode].pk, seconds=max(ARGS.warmup, ARGS.slice_seconds))
        settle(ROUND_TABLES)
        log(f"machine {cpu_busy_percent(0.5):.0f}% busy before; {len(slices)} slices of {ARGS.slice_seconds:g} s")
        groups = {
            **{f"web {mode}": process_group(processes.pgid(f"gunicorn-{mode}")) for mode in ("off", "on")},
            "sealer": process_group(processes.pgid("sealer")),
            **servers,
        }
        for number, mode in enumerate(slices):
            before = {name: process_cpu_seconds(pids) for name, pids in groups.items()}
            cluster_before = process_tree_cpu_seconds(postmaster) if postmaster else 0.0
            made, other, took = buyers_run(port=ports[mode], product_pk=products[mode].pk, seconds=ARGS.slice_seconds)
            processes.check_alive()
            for name, pids in groups.items():
                if not name.startswith("web ") or name == f"web {mode}":
                    cpu[mode][name.removesuffix(f" {mode}")] += cpu_used(before[name], process_cpu_seconds(pids))
            if postmaster:
                cpu[mode]["postgres"] += process_tree_cpu_seconds(postmaster) - cluster_before
            created[mode].append(made)
            elapsed[mode].append(took)
            if other[409]:
                sold_out.append(f"slice {number + 1} {mode}")
            if other:
                rest = ", ".join(f"{count} answered {status or 'nothing'}" for status, count in sorted(other.items()))
                log(f"slice {number + 1} {mode}: {rest}")
    finally:
        processes.stop_all()

    rates = {mode: [n / t for n, t in zip(created[mode], elapsed[mode], strict=True)] for mode in ("off", "on")}
    costs = [1 - on / off for off, on in zip(rates["off"], rates["on"], strict=True) if off]
    pooled = {mode: sum(created[mode]) / sum(elapsed[mode]) for mode in ("off", "on")}
    print()
    print(
        f"buyers {ARGS.buyers}, gunicorn {ARGS.web_workers}x{threads} {ARGS.worker_class} per mode, "
        f"{ARGS.interleave} pairs of {ARGS.slice_seconds:g} s slices"
        + (" — A/A check: both servers serve the engine-off app" if ARGS.same_app else "")
    )
    for mode in ("off", "on"):
        print(f"risk engine {mode:>3}: {pooled[mode]:.1f} checkouts/s over its slices ({sum(created[mode])} checkouts)")
    cost = 1 - pooled["on"] / pooled["off"]
    print(f"cost of the risk engine, pooled: {100 * cost:+.1f} % of throughput (limit: 10 %)")
    if len(costs) > 1:
        low, _median, high = statistics.quantiles(costs, n=4)
        print(
            f"cost pair by pair: median {100 * statistics.median(costs):+.1f} %, quartiles {100 * low:+.1f} to "
            f"{100 * high:+.1f} %, mean {100 * statistics.mean(costs):+.1f} % "
            f"(standard error {100 * statistics.stdev(costs) / len(costs) ** 0.5:.1f})"
        )
    for mode in ("off", "on"):
        spent = {name: 1000 * seconds / max(1, sum(created[mode])) for name, seconds in cpu[mode].items()}
        print(
            f"CPU ms per checkout, risk engine {mode:>3}: web {spent.pop('web'):.2f}, "
            + ", ".join(f"{name} {value:.2f}" for name, value in spent.items())
        )
    orders, missing, report = chain_check()
    return run_end(orders=orders, missing=missing, report=report, sold_out=sold_out)


if __name__ == "__main__":
    sys.exit(main())
