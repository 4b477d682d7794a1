"""Sliding-window counters per identity (account, e-mail, IP, network, device), never per product or
shop: a busy shop is not an attack.

With a Redis cache (`CACHE_URL=redis://…`) each (event, dimension, value) is a sorted set of hits scored
by time, trimmed to the longest window and expiring with it; every process and machine shares it. Any
other cache (the demo, tests) keeps the hits in the database (`VelocityHit`). Both answer the same three
questions: how many hits, how many keys (the sum of weights), how many distinct members in a window.
"""

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Sum

WINDOWS = {"10m": 600, "1h": 3600, "1d": 86400, "30d": 30 * 86400}
LONGEST = max(WINDOWS.values())


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def counter_key(kind: str, event: str, dimension: str, value: str) -> str:
    return f"risk:{kind}:{event}:{dimension}:{_digest(value)}"


def uses_redis() -> bool:
    return settings.CACHES["default"]["BACKEND"].endswith("RedisCache")


class Velocity:
    """Record hits, then answer counts. Queries are queued with `want` and answered in one round trip."""

    def __init__(self, now: datetime):
        self.now = now
        self.redis = uses_redis()
        self._asks: list[tuple[str, str, int]] = []  # (what, key, window seconds)

    # --- writes ---
    def record(self, *, key: str, weight: int = 1, member: str | None = None) -> None:
        self._writes.append((key, weight, member))

    _writes: list

    def __enter__(self):
        self._writes = []
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.flush()

    def flush(self) -> None:
        if not self._writes:
            return
        if self.redis:
            self._flush_redis()
        else:
            from risk.models import VelocityHit

            VelocityHit.objects.bulk_create(
                [
                    VelocityHit(key=key, member=member or secrets.token_hex(8), weight=weight, at=self.now)
                    for key, weight, member in self._writes
                ]
            )
        self._writes = []

    def _flush_redis(self) -> None:
        score = self.now.timestamp()
        pipe = cache._cache.get_client(write=True).pipeline(transaction=False)
        for key, weight, member in self._writes:
            # A plain hit is unique; its weight rides in the member so "keys in a window" can sum it.
            name = member or f"{secrets.token_hex(6)}:{weight}"
            pipe.zadd(key, {name: score})
            pipe.zremrangebyscore(key, "-inf", score - LONGEST)
            pipe.expire(key, LONGEST)
        pipe.execute()

    # --- reads ---
    def answer(self, asks: list[tuple[str, str, int]]) -> list[float]:
        """`asks`: (what, key, window seconds), what ∈ count | weight | distinct; one value each."""
        if not asks:
            return []
        if self.redis:
            return self._answer_redis(asks)
        return [self._answer_db(what, key, seconds) for what, key, seconds in asks]

    def _answer_redis(self, asks) -> list[float]:
        now = self.now.timestamp()
        pipe = cache._cache.get_client().pipeline(transaction=False)
        for what, key, seconds in asks:
            if what == "weight":
                pipe.zrangebyscore(key, now - seconds, "+inf")
            else:
                pipe.zcount(key, now - seconds, "+inf")
        results = pipe.execute()
        answers = []
        for (what, _key, _seconds), result in zip(asks, results, strict=True):
            if what == "weight":
                answers.append(sum(int(member.rsplit(b":", 1)[-1]) for member in result))
            else:
                answers.append(int(result))
        return answers

    def _answer_db(self, what: str, key: str, seconds: int) -> float:
        from risk.models import VelocityHit

        hits = VelocityHit.objects.filter(key=key, at__gt=self.now - timedelta(seconds=seconds))
        if what == "weight":
            return hits.aggregate(total=Sum("weight"))["total"] or 0
        if what == "distinct":
            return hits.values("member").distinct().count()
        return hits.count()


def velocity_prune(*, now: datetime) -> int:
    """Delete database hits older than the longest window (the Redis sets trim themselves)."""
    from risk.models import VelocityHit

    deleted, _ = VelocityHit.objects.filter(at__lt=now - timedelta(seconds=LONGEST)).delete()
    return deleted
