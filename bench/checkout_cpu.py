"""CPU of one checkout (`POST /api/v1/orders/`) in the web process, on PostgreSQL: N checkouts one after
the other through Django's test client, timed with `time.process_time()` (which a busy machine moves
far less than it moves wall time).

    DATABASE_URL=postgres://…/cardshop [CACHE_URL=redis://127.0.0.1:6379/12] \
        .venv/bin/python bench/checkout_cpu.py [N] [--profile] [--compare risk] [--block B]

Creates a scratch test database (test_<name>, dropped at the end) with the shipped risk rules, one
product with enough keys in stock, and places every checkout as a different guest (own e-mail, own
address in a network of its own, as ordinary buyers), so no cap, throttle or risk rule refuses one.
The order-link e-mail's broker publish (on commit) is replaced by a no-op: its cost is the broker's,
not the checkout's. With CACHE_URL a Redis URL (its db is flushed), the throttle and the risk engine's
velocity windows live there, as in production; without, in the database and process memory (as in
the tests).

Prints CPU milliseconds per checkout (the whole request in this process: middleware, DRF, the
service, psycopg2, the test client), the wall milliseconds, and the SQL statements of one checkout.
`--profile` also prints cProfile's top functions and writes them to var/bench/checkout_cpu.prof
(cProfile slows what it watches; its shares are the figure, not its times).

`--compare risk`: what the risk engine adds to that CPU. N checkouts with the engine on and N with it
off (`bench._harness.risk_engine_set`, as `bench/wsgi_risk_off.py` serves it), in blocks of B (default
50) that take turns (off, on, then on, off, …), so a machine busy with others' work for a while slows
both modes alike. Prints each mode's median CPU per checkout over its blocks and the median of the
differences pair by pair (the engine's cost), with their quartiles; the same for the CPU the
checkouts cost this process's PostgreSQL backend and, with CACHE_URL a Redis URL on this machine, the
Redis server (both from /proc/<pid>/schedstat: nanoseconds, where /proc/<pid>/stat counts 10 ms ticks).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("CHECKOUT_RATE_LIMIT", "1000000/min")
os.environ.setdefault("LOG_LEVEL", "WARNING")

if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
    sys.exit("Set DATABASE_URL=postgres://… (the benchmark measures PostgreSQL).")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

WARM = 200
# What a checkout writes, as `bench/checkout.py` settles it (importing that script would run it).
TABLES = ["shop_cardkey", "escrow_order", "escrow_payment", "accounts_auditentry", "risk_decision", "risk_seenidentity"]


def main(n: int, *, profile: bool, compare: bool, block: int) -> None:
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(n, profile=profile, compare=compare, block=block)
    finally:
        connection.close()
        connection.creation.destroy_test_db(name, verbosity=0)


def run(n: int, *, profile: bool, compare: bool, block: int) -> None:
    from django.conf import settings
    from django.core.cache import cache

    from bench._harness import buyer_address, risk_engine_set, settle
    from escrow import tasks
    from tests import factories

    if settings.CACHE_URL.startswith("redis"):
        cache._cache.get_client(write=True).flushdb()
    tasks.order_link_email_task.delay = lambda **kwargs: None
    product = factories.product_create(stock=(2 if compare else 1) * (n + WARM) + 1, price=1234)
    client = Client()
    numbers = iter(range(10**9))

    def checkout():
        i = next(numbers)
        response = client.post(
            "/api/v1/orders/",
            {"product": product.pk, "quantity": 1, "email": f"buyer{i}@example.com"},
            content_type="application/json",
            REMOTE_ADDR=buyer_address(i),
        )
        assert response.status_code == 201, response.content
        return response

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        servers = {"PostgreSQL": cursor.fetchone()[0]}
    if settings.CACHE_URL.startswith("redis"):
        servers["Redis"] = cache._cache.get_client(write=True).info("server")["process_id"]

    def timed(count: int) -> dict[str, float]:
        """CPU milliseconds per checkout of `count` checkouts: this process's, and each server's."""
        before = {name: on_cpu_seconds(pid) for name, pid in servers.items()}
        started = time.process_time()
        for _ in range(count):
            checkout()
        spent = {"web": time.process_time() - started}
        spent |= {name: on_cpu_seconds(pid) - before[name] for name, pid in servers.items()}
        return {name: 1000 * seconds / count for name, seconds in spent.items()}

    for on in (False, True) if compare else (True,):
        risk_engine_set(on=on)
        for _ in range(WARM):
            checkout()
    # Analysed as autovacuum would have them in production: tables that started empty are planned
    # as empty until then, and the key claim's plan depends on it (docs/performance.md).
    settle(TABLES)
    with CaptureQueriesContext(connection) as captured:
        checkout()
    statements = len(captured)
    where = "Redis" if settings.CACHE_URL.startswith("redis") else "the database and process memory"
    if compare:
        compare_run(n, block=block, timed=timed, parts=["web", *servers])
        print(f"throttle and velocity in {where}; SQL statements of one checkout, engine on: {statements}")
        return
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(n):
        checkout()
    cpu = time.process_time() - cpu_started
    elapsed = time.perf_counter() - started
    if profiler is not None:
        import pstats

        profiler.disable()
        stats = pstats.Stats(profiler)
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "bench")
        os.makedirs(path, exist_ok=True)
        stats.dump_stats(os.path.join(path, "checkout_cpu.prof"))
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
    print(f"checkouts: {n}, one after the other, each a new guest; throttle and velocity in {where}")
    print(f"CPU of this process per checkout: {1000 * cpu / n:.2f} ms; wall {1000 * elapsed / n:.2f} ms")
    print(f"SQL statements of one checkout: {statements} (BEGIN and COMMIT included)")


def on_cpu_seconds(pid: int) -> float:
    """The time a process (its main thread) has run on a CPU, from /proc/<pid>/schedstat."""
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0]) / 1e9


def compare_run(n: int, *, block: int, timed, parts: list[str]) -> None:
    from bench._harness import risk_engine_set

    blocks: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    pairs = max(1, n // block)
    for pair in range(pairs):
        for mode in ("off", "on") if pair % 2 == 0 else ("on", "off"):
            risk_engine_set(on=mode == "on")
            blocks[mode].append(timed(block))
    risk_engine_set(on=True)

    def spread(values: list[float]) -> str:
        low, _median, high = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        return f"{statistics.median(values):.3f} ms (quartiles {low:.3f} to {high:.3f})"

    print(f"checkouts: {pairs * block} per mode, in {pairs} pairs of blocks of {block}, the modes taking turns")
    for part in parts:
        off, on = [cpu[part] for cpu in blocks["off"]], [cpu[part] for cpu in blocks["on"]]
        added = [b - a for a, b in zip(off, on, strict=True)]
        print(f"{part} CPU per checkout, risk engine off: {spread(off)}")
        print(f"{part} CPU per checkout, risk engine on:  {spread(on)}")
        print(f"{part} CPU added by the risk engine (on - off, pair by pair): {spread(added)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=1000, help="checkouts (per mode with --compare)")
    parser.add_argument("--profile", action="store_true", help="cProfile the checkouts (not with --compare)")
    parser.add_argument("--compare", choices=["risk"], help="the risk engine on against off, interleaved")
    parser.add_argument("--block", type=int, default=50, help="checkouts per block with --compare (default 50)")
    args = parser.parse_args()
    if args.n < 1 or args.block < 1 or (args.profile and args.compare):
        parser.error("N and --block must be at least 1; --profile measures one mode, not --compare")
    main(args.n, profile=args.profile, compare=args.compare == "risk", block=args.block)
