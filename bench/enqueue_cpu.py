"""CPU of one delivery task published to the Redis broker: `order_delivery_enqueue(order_pk=…)`, what
the payment webhook's commit does (escrow/delivery.py), in a loop in this process (issue 9).

    .venv/bin/python bench/enqueue_cpu.py [--publishes 3000] [--rounds 5] [--redis-url redis://127.0.0.1:6379/13]
    .venv/bin/python bench/enqueue_cpu.py --profile 40      # and where the time goes (cProfile, CPU clock)

No worker runs: the messages pile up in the Redis database, which is flushed before and after (so give
it a database of its own). Prints the median over rounds of CPU µs per publish, measured with
`time.process_time()` (kernel time of the socket calls included). Asserts nothing about timing.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishes", type=int, default=3000, help="publishes per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions (cProfile)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13"))
    return parser.parse_args()


ARGS = parse_args()
os.environ.update(
    CELERY_BROKER_URL=ARGS.redis_url,
    CELERY_TASK_ALWAYS_EAGER="0",
    DJANGO_SETTINGS_MODULE="config.settings",
    LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
)

import django  # noqa: E402
import redis  # noqa: E402

django.setup()

from escrow.delivery import order_delivery_enqueue  # noqa: E402


def publish(count: int) -> float:
    """CPU seconds of `count` publishes."""
    started = time.process_time()
    for order_pk in range(count):
        order_delivery_enqueue(order_pk=order_pk)
    return time.process_time() - started


def main() -> None:
    broker = redis.Redis.from_url(ARGS.redis_url)
    broker.flushdb()
    try:
        publish(200)  # the connection, the producer pool and the queue's declaration
        per_publish = [publish(ARGS.publishes) / ARGS.publishes * 1e6 for _ in range(ARGS.rounds)]
        queued = broker.llen("celery")
        if queued != 200 + ARGS.rounds * ARGS.publishes:  # the enqueue logs and swallows a broker error
            raise SystemExit(f"{queued} messages queued, not {200 + ARGS.rounds * ARGS.publishes}: see the log")
        print(
            f"CPU µs per publish: median {statistics.median(per_publish):.0f} of {ARGS.rounds} rounds of "
            f"{ARGS.publishes} ({', '.join(f'{value:.0f}' for value in per_publish)})"
        )
        if ARGS.profile:
            import cProfile
            import pstats

            profile = cProfile.Profile(time.process_time)
            profile.runcall(publish, ARGS.publishes)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(ARGS.profile)
    finally:
        broker.flushdb()


if __name__ == "__main__":
    main()
