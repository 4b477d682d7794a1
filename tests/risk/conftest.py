import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from risk.models import Rule


@pytest.fixture
def no_rules(db):
    """Only the rules the test adds (the shipped set is covered by the attack tests)."""
    Rule.objects.all().delete()


@pytest.fixture
def now():
    return timezone.now()


def rule(event, signal, comparison, threshold, outcome, **fields) -> Rule:
    return Rule.objects.create(
        event=event, signal=signal, comparison=comparison, threshold=threshold, outcome=outcome, **fields
    )


@pytest.fixture
def default_rules(db):
    """The shipped rule set, as migration 0002 loads it: a transactional test elsewhere in the run
    (tests/escrow/test_statement_budget.py) flushes every table, data-migration rows included."""
    from importlib import import_module

    from django.apps import apps

    import_module("risk.migrations.0002_default_rules").rules_add(apps, None)


@pytest.fixture
def redis_cache(settings):
    """The velocity counters in Redis sorted sets (the broker's test db), as in production."""
    url = django_settings.CELERY_BROKER_URL if str(django_settings.CELERY_BROKER_URL).startswith("redis") else ""
    import os

    url = os.environ.get("TEST_CELERY_BROKER_URL", url)
    if not url.startswith("redis"):
        pytest.skip("needs Redis (TEST_CELERY_BROKER_URL=redis://…)")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    from django.core.cache import cache

    cache._cache.get_client(write=True).flushdb()
    yield
    cache._cache.get_client(write=True).flushdb()
