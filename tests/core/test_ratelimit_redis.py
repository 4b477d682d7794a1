"""The shared limiter on Redis: one round trip per attempt, a counter that always expires."""

from django.core.cache import caches

from core.cache import RedisCache
from core.ratelimit import rate_limit_hit


def test_attempts_are_counted_in_one_window_that_expires(redis_cache, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "2/min"}
    now = 1_000_040.0  # 40 s before its minute ends
    decisions = [rate_limit_hit(scope="checkout", identity="203.0.113.9", now=now) for _ in range(3)]
    assert [(d.allowed, d.count) for d in decisions] == [(True, 1), (True, 2), (False, 3)]
    assert decisions[-1].retry_after == 40
    (key,) = redis_cache.keys("*ratelimit:checkout:*")
    assert 60 < redis_cache.ttl(key) <= 65  # the window's length and the margin: never a counter without expiry
    assert caches["default"].get(key.decode().split(":", 2)[-1]) == 3  # the cache API reads the same counter
    # another identity, and the next window, start at one
    assert rate_limit_hit(scope="checkout", identity="203.0.113.10", now=now).count == 1
    assert rate_limit_hit(scope="checkout", identity="203.0.113.9", now=now + 60).count == 1


def test_the_cache_keeps_one_client_per_pool(redis_cache):
    backend = caches["default"]
    assert isinstance(backend, RedisCache)
    assert backend._cache.get_client(write=True) is backend._cache.get_client(write=True)
    backend.set("k", 1)
    assert backend.get("k") == 1


def test_a_server_that_forgot_the_script_gets_it_again(redis_cache):
    """The window is counted by a script; a server that lost its scripts (a restart, SCRIPT FLUSH) gets
    it loaded again, and counting goes on in the same window."""
    now = 1_000_040.0
    assert rate_limit_hit(scope="checkout", identity="203.0.113.9", now=now).count == 1
    assert rate_limit_hit(scope="checkout", identity="203.0.113.9", now=now).count == 2
    redis_cache.script_flush()
    assert rate_limit_hit(scope="checkout", identity="203.0.113.9", now=now).count == 3
    (key,) = redis_cache.keys("*ratelimit:checkout:*")
    assert 60 < redis_cache.ttl(key) <= 65
