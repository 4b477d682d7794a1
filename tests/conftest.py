import os

import pytest
import redis
from django.db import connection
from django.utils import translation
from hypothesis import settings as hypothesis_settings

from config.celery import app as celery_app

# CI explores the same examples on every run (derandomized), so a submission lands or fails on its own
# merits; locally every run draws new ones, which is where property tests find new bugs.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

ON_POSTGRES = connection.vendor == "postgresql"
requires_postgres = pytest.mark.skipif(
    not ON_POSTGRES,
    reason="needs PostgreSQL (row locks, SKIP LOCKED, truly concurrent transactions or pg_dump); this run is on SQLite",
)


@pytest.fixture(autouse=True)
def _fast_and_local(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.AXES_ENABLED = False
    settings.RATE_LIMITS = dict.fromkeys(settings.RATE_LIMITS, "10000/min")  # tests of limits set their own
    settings.ORDER_KEYS_WAIT_SECONDS = 0  # a 409 at once; tests/escrow/test_keys_wait.py sets its own
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    # The risk engine's snapshot of rules and block list: a flush or a data migration's bulk insert
    # between tests bypasses the signals that bump its version (risk/ruleset.py).
    from risk.ruleset import ruleset_forget

    ruleset_forget()
    yield
    # A request's language (LocaleMiddleware, a user's saved language) stays active in this thread
    # after the test client returns, as it would until the next request: not into the next test.
    translation.deactivate()


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    """Run on-commit work (deliveries, e-mails) as a real commit would, inside a test transaction."""

    def runner():
        return django_capture_on_commit_callbacks(execute=True)

    return runner


# --- in CI nothing may skip: a skipped PostgreSQL, Celery or browser test fails the run --------------
_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI_REQUIRE_ALL_TESTS") and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(f"CI_REQUIRE_ALL_TESTS: {len(_skipped)} test(s) skipped, which CI forbids:", red=True)
        for nodeid in _skipped:
            reporter.write_line(f"  {nodeid}", red=True)
        session.exitstatus = 1


REDIS_CACHE_URL = os.environ.get("TEST_CACHE_URL", "redis://127.0.0.1:6379/5")


@pytest.fixture
def redis_cache(settings):
    """The cache on Redis (TEST_CACHE_URL, flushed before and after), as deployed; the raw server."""
    try:
        redis.Redis.from_url(REDIS_CACHE_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"needs Redis at {REDIS_CACHE_URL} (TEST_CACHE_URL)")
    server = redis.Redis.from_url(REDIS_CACHE_URL)
    server.flushdb()
    settings.CACHES = {"default": {"BACKEND": "core.cache.RedisCache", "LOCATION": REDIS_CACHE_URL}}
    yield server
    server.flushdb()
