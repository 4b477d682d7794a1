"""The shop's settings for the app processes a benchmark starts (`DJANGO_SETTINGS_MODULE=bench.settings`),
with every SQL statement counted (`bench._statements`).

The abuse limits are lifted by `bench/purchase.py` through their environment variables
(CHECKOUT_RATE_LIMIT, KEY_REVEAL_RATE_LIMIT, RESERVATION_MAX_KEYS_PER_IP): a benchmark buyer buys far
faster than a person, and the limits would otherwise be the figure measured. A shop whose DRF throttle rates are
fixed in `REST_FRAMEWORK` (before the shared-cache limiter) gets them lifted here instead; either way
the throttles still run, so their cost stays in the figures.
"""

import os

from config import settings as _shop
from config.settings import *  # noqa: F403

if _shop.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES"):
    REST_FRAMEWORK = {
        **_shop.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(_shop.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "1000000/s"),
    }
INSTALLED_APPS = [*_shop.INSTALLED_APPS, "bench._statements.StatementCounting"]

# bench/load.py --profile: cProfile around every request and task (bench/_profile.py).
if os.environ.get("BENCH_PROFILE_DIR"):
    MIDDLEWARE = ["bench._profile.ProfileMiddleware", *_shop.MIDDLEWARE]
    from bench._profile import install_task_hooks

    install_task_hooks()
