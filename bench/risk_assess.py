"""Checkout assessments against 50 active rules with velocity signals, on PostgreSQL and Redis.

    DATABASE_URL=postgres://…/cardshop CACHE_URL=redis://127.0.0.1:6379/3 \
        .venv/bin/python bench/risk_assess.py [N] [--alone]
    .venv/bin/python bench/risk_assess.py --throughput [bench/checkout.py's options]

Creates a scratch test database (test_<name>, dropped at the end) and flushes the Redis db in CACHE_URL.
Each assessment is what `order_place_assessed` adds to a checkout: `risk.assessment_prepare(event=
"checkout")` (the rules and block list from the process's snapshot behind a version key in Redis; the
act's velocity hits recorded and its windows counted by ONE Redis script call (EVALSHA); the actor's history and
seen identities in ONE SQL statement) and `store(subject=("order", …))` (the decision and the seen
identities in ONE SQL statement, in the checkout's transaction in production, autocommit here). 300
buyers with their own devices and networks place N checkouts (default 3000) one after the other; the
script prints p50/p99 of the added latency, assessments per second, and the SQL statements and Redis
round trips of one assessment. Each assessment is timed inside a transaction, as the checkout runs it
(the commit is the order's, which it pays anyway); `--alone` times each with its own commit instead
(a sign-in's assessment).

The issue's other target, checkout throughput within 10 % of the same run with the engine off, is
measured end to end through gunicorn by `bench/checkout.py --compare risk`; `--throughput` runs exactly
that (the other options are checkout.py's: --buyers, --seconds, --rounds, --database-url, …). Its
steadiest form switches the load between both servers every few seconds:

    .venv/bin/python bench/risk_assess.py --throughput --interleave 20 --slice-seconds 4 --warmup 8 \
        --keys 30000 --web-workers 4 --worker-class sync --database-url postgres://…/cardshop_riskperf_bench_checkout \
        --redis-url redis://127.0.0.1:6379/1
"""

import os
import random
import statistics
import sys
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

if "--throughput" in sys.argv:  # bench/checkout.py --compare risk, with the other arguments
    checkout = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkout.py")
    arguments = [argument for argument in sys.argv[1:] if argument != "--throughput"]
    os.execv(sys.executable, [sys.executable, checkout, "--compare", "risk", *arguments])

if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("CACHE_URL", "").startswith(
    "redis"
):
    sys.exit("Set DATABASE_URL=postgres://… and CACHE_URL=redis://… (the benchmark measures those).")

import django

django.setup()

from django.core.cache import cache  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

SIGNALS = [
    "count.checkout.device.10m",
    "count.checkout.ip.10m",
    "count.checkout.email.1h",
    "count.checkout.network.1h",
    "count.checkout.account.1d",
    "keys.checkout.email.1h",
    "keys.checkout.device.1d",
    "emails.device.1d",
    "emails.ip.1h",
    "emails.network.1d",
    "count.payment_failed.device.1h",
    "count.payment_failed.ip.1h",
    "amount",
    "quantity",
    "anomaly_score",
    "new_device",
    "account_age_days",
]


ALONE = "--alone" in sys.argv  # each assessment commits on its own (as a sign-in's does)


def main(n: int) -> None:
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(n)
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


def run(n: int) -> None:
    import risk
    from risk.models import Rule

    cache._cache.get_client(write=True).flushdb()
    Rule.objects.filter(event="checkout").delete()
    generator = random.Random(1)
    outcomes = ["block", "review", "challenge", "allow"]
    for i in range(50):
        Rule.objects.create(
            event="checkout",
            signal=SIGNALS[i % len(SIGNALS)],
            comparison="gte",
            threshold=10_000_000 + i,  # never matches: every rule is evaluated, the worst case
            outcome=outcomes[i % 4],
        )
    assert Rule.objects.filter(event="checkout", is_active=True).count() == 50
    buyers = [
        {
            "email": f"b{i}@example.com",
            "ip": f"10.{i // 200}.{i % 200}.7",
            "device": f"dev-{i}",
            "actor_id": i if i % 2 else None,
        }
        for i in range(300)
    ]
    now = timezone.now()
    timings = []
    for warm in range(200):  # connections, caches, plans
        risk.assess(event="checkout", context=risk.RiskContext(**buyers[warm % 300], amount=1000, quantity=1), now=now)
    statements, round_trips = _cost_of_one(risk.RiskContext(**buyers[1], amount=1000, quantity=1, currency="CNY"), now)
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(n):
        buyer = buyers[generator.randrange(300)]
        context = risk.RiskContext(**buyer, amount=generator.choice([600, 1000, 3000]), quantity=1, currency="CNY")
        at = now + timedelta(seconds=i * 0.2)
        if ALONE:
            t0 = time.perf_counter()
            risk.assessment_prepare(event="checkout", context=context, now=at).store(subject=("order", i))
            timings.append((time.perf_counter() - t0) * 1000)
        else:
            # As in the checkout: inside the order's transaction, whose commit the order pays anyway.
            with transaction.atomic():
                t0 = time.perf_counter()
                risk.assessment_prepare(event="checkout", context=context, now=at).store(subject=("order", i))
                timings.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    timings.sort()
    p50 = statistics.median(timings)
    p99 = timings[int(len(timings) * 0.99) - 1]
    where = "each in its own commit" if ALONE else "inside a transaction, its commit not counted (the order's)"
    print(f"checkout assessments: {n}, 50 active rules, {len(buyers)} buyers, PostgreSQL + Redis; {where}")
    print(f"added latency per checkout: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {timings[-1]:.2f} ms")
    print(f"assessments per second (one process, one after another): {n / elapsed:.0f}")
    print(f"CPU of this process per assessment: {1000 * cpu / n:.2f} ms (the rest of the wall time is waiting)")
    print(f"per assessment: {statements} SQL statements, {round_trips} Redis round trips (a signed-in buyer)")
    print("checkout throughput with the engine on against off: bench/risk_assess.py --throughput")


def _cost_of_one(context, now) -> tuple[int, int]:
    """SQL statements and Redis round trips (commands, or pipelines) of one warm assessment."""
    import redis
    from django.test.utils import CaptureQueriesContext

    import risk

    calls = []
    connection_class = redis.connection.AbstractConnection
    original = connection_class.send_packed_command

    def sent(self, *args, **kwargs):  # one per command or pipeline sent: a round trip
        calls.append(1)
        return original(self, *args, **kwargs)

    connection_class.send_packed_command = sent
    try:
        with CaptureQueriesContext(connection) as captured:
            risk.assessment_prepare(event="checkout", context=context, now=now).store(subject=("order", 0))
    finally:
        connection_class.send_packed_command = original
    return len(captured), len(calls)


if __name__ == "__main__":
    numbers = [argument for argument in sys.argv[1:] if argument.isdigit()]
    main(int(numbers[0]) if numbers else 3000)
