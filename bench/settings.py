"""The shop's settings for the app processes a benchmark starts (`DJANGO_SETTINGS_MODULE=bench.settings`).

Two changes, both for measuring, neither a change to the app:
- every API rate limit is lifted: all benchmark buyers come from 127.0.0.1, and the checkout's 30/min
  would otherwise be the figure measured. The throttles still run (their cost stays in the figures);
  their limits are just out of reach. The settings read no environment variable for these rates.
- every SQL statement is counted (`bench._statements`).
"""

from config import settings as _shop
from config.settings import *  # noqa: F403

_OUT_OF_REACH = "1000000/s"

REST_FRAMEWORK = {
    **_shop.REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": dict.fromkeys(_shop.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}), _OUT_OF_REACH),
}
if hasattr(_shop, "RATE_LIMITS"):  # rate limits in the shared cache, per scope, when the shop has them
    RATE_LIMITS = dict.fromkeys(_shop.RATE_LIMITS, _OUT_OF_REACH)
INSTALLED_APPS = [*_shop.INSTALLED_APPS, "bench._statements.StatementCounting"]
