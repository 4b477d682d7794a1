"""CPU of one checkout (`POST /api/v1/orders/`) in the web process, on PostgreSQL: N checkouts one after
the other through Django's test client, timed with `time.process_time()` (which a busy machine moves
far less than it moves wall time).

    DATABASE_URL=postgres://…/cardshop [CACHE_URL=redis://127.0.0.1:6379/12] \
        .venv/bin/python bench/checkout_cpu.py [N] [--profile]

Creates a scratch test database (test_<name>, dropped at the end) with the shipped risk rules, one
product with N + warm-up keys in stock, and places every checkout as a different guest (own e-mail,
own address), so no cap, throttle or risk rule refuses one. The order-link e-mail's broker publish
(on commit) is replaced by a no-op: its cost is the broker's, not the checkout's. With CACHE_URL a
Redis URL (its db is flushed), the throttle and the risk engine's velocity windows live there, as in
production; without, in the database and process memory (as in the tests).

Prints CPU milliseconds per checkout (the whole request in this process: middleware, DRF, the
service, psycopg2, the test client), the wall milliseconds, and the SQL statements of one checkout.
`--profile` also prints cProfile's top functions and writes them to var/bench/checkout_cpu.prof
(cProfile slows what it watches; its shares are the figure, not its times).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("CHECKOUT_RATE_LIMIT", "1000000/min")

if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
    sys.exit("Set DATABASE_URL=postgres://… (the benchmark measures PostgreSQL).")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

WARM = 200


def main(n: int, profile: bool) -> None:
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(n, profile)
    finally:
        connection.close()
        connection.creation.destroy_test_db(name, verbosity=0)


def run(n: int, profile: bool) -> None:
    from django.conf import settings
    from django.core.cache import cache

    from escrow import tasks
    from tests import factories

    if settings.CACHE_URL.startswith("redis"):
        cache._cache.get_client(write=True).flushdb()
    tasks.order_link_email_task.delay = lambda **kwargs: None
    product = factories.product_create(stock=n + WARM + 1, price=1234)
    client = Client()

    def checkout(i: int):
        response = client.post(
            "/api/v1/orders/",
            {"product": product.pk, "quantity": 1, "email": f"buyer{i}@example.com"},
            content_type="application/json",
            REMOTE_ADDR=f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}",
        )
        assert response.status_code == 201, response.content
        return response

    for i in range(WARM):
        checkout(i)
    with CaptureQueriesContext(connection) as captured:
        checkout(WARM)
    statements = len(captured)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(WARM + 1, WARM + 1 + n):
        checkout(i)
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
    where = "Redis" if settings.CACHE_URL.startswith("redis") else "the database and process memory"
    print(f"checkouts: {n}, one after the other, each a new guest; throttle and velocity in {where}")
    print(f"CPU of this process per checkout: {1000 * cpu / n:.2f} ms; wall {1000 * elapsed / n:.2f} ms")
    print(f"SQL statements of one checkout: {statements} (BEGIN and COMMIT included)")


if __name__ == "__main__":
    numbers = [argument for argument in sys.argv[1:] if argument.isdigit()]
    main(int(numbers[0]) if numbers else 1000, "--profile" in sys.argv)
