"""CPU and SQL statements per payment webhook, in one process (issue 9): what the web spends on
`POST /payments/sandbox/webhook/` with no server, network or other buyer in the way.

    .venv/bin/python bench/webhook_cpu.py --orders 300 --rounds 3
    .venv/bin/python bench/webhook_cpu.py --orders 300 --profile 25     # and where the time goes

Places `--orders` orders through `order_place_assessed` (as the API does: each checkout's risk decision
is stored, from an address of its own), then posts each one's signed `payment.succeeded` webhook
through `django.test.Client` (the whole middleware stack) on PostgreSQL, with the shared cache and the
broker on Redis (the risk engine's velocity and the delivery task published there, as in production;
no worker runs, so nothing is delivered). A round times `time.process_time()` and the wall clock
around the webhooks only, and counts the statements Django sends (BEGIN and COMMIT are not counted
here: add 2 per webhook). `--replays` posts each webhook a second time afterwards (the "duplicate"
path), timed apart. CPU time holds on a busy machine far better than throughput, but other processes
still move it a little: compare medians of several rounds.

The database (name must contain "bench") is dropped and created first; the Redis database is flushed.
Prints figures, asserts nothing about timing.
"""

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/cardshop_bench_webhook"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=300, help="webhooks per round (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--replays", action="store_true", help="also time each webhook sent a second time")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions (cProfile)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args()
    if min(args.orders, args.rounds) < 1:
        parser.error("--orders and --rounds must be at least 1")
    if "bench" not in args.database_url.rsplit("/", 1)[-1]:
        parser.error("the database is dropped first, and its name has no 'bench' in it")
    return args


ARGS = parse_args()
os.environ.update(
    DATABASE_URL=ARGS.database_url,
    CELERY_BROKER_URL=ARGS.redis_url,
    CACHE_URL=ARGS.redis_url,
    CELERY_TASK_ALWAYS_EAGER="0",
    DEBUG="0",
    LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
    EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    DJANGO_SETTINGS_MODULE="config.settings",
    RESERVATION_MAX_KEYS_PER_IP="1000000",
    RESERVATION_MAX_KEYS_PER_EMAIL="1000000",
)

import django  # noqa: E402
import redis  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

import risk  # noqa: E402
from bench._harness import database_prepare, log, product_with_keys, settle  # noqa: E402
from escrow import services  # noqa: E402
from escrow.models import Order, OrderStatus  # noqa: E402
from tests.factories import signed_webhook, webhook_post  # noqa: E402


def orders_place(product, count: int, tag: str) -> list:
    """`count` orders as the API places them, each buyer on an address of their own; their payments."""
    payments = []
    for number in range(count):
        email = f"{tag}-{number}@example.com"
        ip = f"10.{number // 250 % 250 + 2}.{number % 250}.{hash(tag) % 250 + 1}"
        placed = services.order_place_assessed(
            risk_context=risk.RiskContext(email=email, ip=ip),
            product_pk=product.pk,
            quantity=1,
            email=email,
            buyer=None,
            now=timezone.now(),
            ip=ip,
        )
        payments.append(placed.payment)
    return payments


class Statements:
    """Counts what Django sends to the database (BEGIN and COMMIT are not sent through it)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def timed(requests, profile: cProfile.Profile | None) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, statements) of posting every (body, headers) in `requests`."""
    client = Client()
    counter = Statements()
    with connection.execute_wrapper(counter):
        if profile is not None:
            profile.enable()
        cpu, wall = time.process_time(), time.perf_counter()
        for body, headers in requests:
            response = webhook_post(client, body, headers)
            if response.status_code != 200:
                raise SystemExit(f"webhook answered {response.status_code}: {response.content!r}")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profile is not None:
            profile.disable()
    return cpu, wall, counter.count


def main() -> int:
    redis.Redis.from_url(ARGS.redis_url).flushdb()
    database_prepare(ARGS.database_url, fresh=True)
    product = product_with_keys(keys=ARGS.orders * (ARGS.rounds + 1) + 10, max_per_order=1)
    # One purchase first, unmeasured: it opens the platform's and the merchant's ledger accounts.
    (body, headers), *_ = [signed_webhook(payment=p) for p in orders_place(product, 1, "warm")]
    timed([(body, headers)], None)
    profile = cProfile.Profile(time.process_time) if ARGS.profile else None  # CPU, not waits
    cpu_ms, wall_ms, replay_ms = [], [], []
    for round_number in range(ARGS.rounds):
        requests = [signed_webhook(payment=p) for p in orders_place(product, ARGS.orders, f"r{round_number}")]
        settle(["escrow_order", "escrow_payment", "risk_decision", "shop_cardkey"])
        cpu, wall, statements = timed(requests, profile)
        cpu_ms.append(cpu * 1000 / ARGS.orders)
        wall_ms.append(wall * 1000 / ARGS.orders)
        line = (
            f"round {round_number + 1}: {ARGS.orders} webhooks, CPU {cpu_ms[-1]:.2f} ms and wall "
            f"{wall_ms[-1]:.2f} ms per webhook, {statements / ARGS.orders:.1f} statements each (+ BEGIN, COMMIT)"
        )
        if ARGS.replays:
            cpu, _, statements = timed(requests, None)
            replay_ms.append(cpu * 1000 / ARGS.orders)
            line += f"; replayed: CPU {replay_ms[-1]:.2f} ms, {statements / ARGS.orders:.1f} statements"
        log(line)
    paid = Order.objects.filter(status=OrderStatus.PAID).count()
    log(f"orders paid (awaiting the worker): {paid} of {ARGS.orders * ARGS.rounds + 1}")
    print(
        f"median CPU per webhook {statistics.median(cpu_ms):.2f} ms, wall {statistics.median(wall_ms):.2f} ms"
        + (f", replay CPU {statistics.median(replay_ms):.2f} ms" if replay_ms else "")
    )
    if profile is not None:
        stats = pstats.Stats(profile).sort_stats("tottime")
        stats.print_stats(ARGS.profile)
        stats.sort_stats("cumulative").print_stats(ARGS.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
