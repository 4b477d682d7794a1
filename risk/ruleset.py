"""The active rules and the live block list, kept in each process behind a version key in the shared cache.

Every assessment needs both, and they change rarely (staff edit them), so reading them from PostgreSQL
on every checkout was two statements for nothing. Each process keeps one snapshot and checks the
version key (`risk:ruleset:version`, one cache GET: Redis in production, so every process and
machine sees a change at once) on each assessment; a change reloads it.

The version is bumped on every save or delete of a `Rule` or `BlockEntry`, through the model's
post_save / post_delete (connected in `RiskConfig.ready`: cache invalidation, not domain logic, so a
rule created in the admin, by a service, in a shell or by a test is seen alike), once at once and once
more after the commit, so a process that reloaded between the two (seeing the old rows) reloads again.
A change made outside the ORM (SQL, a bulk insert, a data migration) is seen within `MAX_AGE` seconds:
no snapshot is older than that.
"""

import operator
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from risk.context import Outcome
from risk.models import BlockEntry, BlockKind, Comparison, Rule
from risk.velocity import cache_setting

VERSION_KEY = "risk:ruleset:version"
MAX_AGE = 60.0  # seconds: the longest a change made outside the ORM goes unseen


@dataclass(frozen=True)
class Ruleset:
    version: Any
    loaded: float  # time.monotonic() of the load
    # Per event, the active rules harshest outcome first, then by pk (the order they are tried in).
    rules: dict[str, tuple[Rule, ...]]
    # The block-list entries not expired when loaded (expiry is checked again against each act's time):
    # by (kind, value) for exact ones, and the patterns (e-mail wildcards, CIDR ranges), by pk.
    exact: dict[tuple[str, str], tuple[BlockEntry, ...]]
    patterns: tuple[BlockEntry, ...]
    # Per event, the same rules compiled for the engine's one pass: (signal, comparison as a function of
    # (value, threshold), threshold, rule), in the same order; and the distinct signals they name.
    checks: dict[str, tuple[tuple[str, Callable[[float, float], bool], float, Rule], ...]] = field(default_factory=dict)
    signals: dict[str, tuple[str, ...]] = field(default_factory=dict)


# Rule.matches as functions: `compare(float(value), threshold)` for a value that is not None.
COMPARE = {
    Comparison.GTE: operator.ge,
    Comparison.GT: operator.gt,
    Comparison.LTE: operator.le,
    Comparison.LT: operator.lt,
    Comparison.EQ: operator.eq,
}


def _check(rule: Rule) -> tuple[str, Callable[[float, float], bool], float, Rule]:
    compare = COMPARE.get(rule.comparison)
    if compare is None:  # not a comparison the admin offers: Rule.matches raises for it, as before
        return rule.signal, lambda value, _threshold, rule=rule: rule.matches(value), rule.threshold, rule
    return rule.signal, compare, rule.threshold, rule


_snapshot: Ruleset | None = None
_UNREAD = object()


def version_key() -> str:
    """The version's key as the cache stores it (with the cache's prefix): read raw in a pipeline.
    Made once per cache settings (its prefix and key function are fixed by them)."""
    return cache_setting("version_key", lambda: caches[DEFAULT_CACHE_ALIAS].make_and_validate_key(VERSION_KEY))


def version_read():
    """The shared version as it is: raw bytes from Redis (compared, never decoded), else the value."""
    from risk.velocity import uses_redis

    if uses_redis():
        return cache._cache.get_client().get(version_key())
    return cache.get(VERSION_KEY)


def ruleset(version=_UNREAD) -> Ruleset:
    """The current rules and block list: this process's snapshot, reloaded when the version changed.

    `version`: the shared version when the caller read it already (the assessment reads it in the same
    Redis command as its velocity windows, so checking costs no round trip of its own)."""
    global _snapshot
    if version is _UNREAD:
        version = version_read()
    snapshot = _snapshot
    if snapshot is None or snapshot.version != version or time.monotonic() - snapshot.loaded > MAX_AGE:
        snapshot = _load(version)
        _snapshot = snapshot
    return snapshot


def ruleset_unchecked() -> Ruleset | None:
    """This process's snapshot without checking the version (None if there is none, or it is too old):
    what an assessment guesses the rules are, to ask for their signals while it reads the version."""
    snapshot = _snapshot
    if snapshot is None or time.monotonic() - snapshot.loaded > MAX_AGE:
        return None
    return snapshot


def _load(version) -> Ruleset:
    rules: dict[str, list[Rule]] = {}
    for rule in Rule.objects.filter(is_active=True):
        rules.setdefault(rule.event, []).append(rule)
    ordered = {
        event: tuple(sorted(found, key=lambda rule: (Outcome.ORDER.index(rule.outcome), rule.pk)))
        for event, found in rules.items()
    }
    live = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    exact: dict[tuple[str, str], list[BlockEntry]] = {}
    patterns: list[BlockEntry] = []
    for entry in BlockEntry.objects.filter(live).order_by("pk"):
        pattern = "*" if entry.kind == BlockKind.EMAIL else "/" if entry.kind == BlockKind.IP else None
        if pattern and pattern in entry.value:
            patterns.append(entry)
        else:
            exact.setdefault((entry.kind, entry.value), []).append(entry)
    return Ruleset(
        version=version,
        loaded=time.monotonic(),
        rules=ordered,
        exact={key: tuple(found) for key, found in exact.items()},
        patterns=tuple(patterns),
        checks={event: tuple(_check(rule) for rule in found) for event, found in ordered.items()},
        signals={event: tuple(dict.fromkeys(rule.signal for rule in found)) for event, found in ordered.items()},
    )


def ruleset_changed(**_signal_arguments) -> None:
    """Make every process reload the rules and block list: now, and again after the commit."""
    global _snapshot
    _snapshot = None
    cache.set(VERSION_KEY, secrets.token_hex(8), timeout=None)
    transaction.on_commit(lambda: cache.set(VERSION_KEY, secrets.token_hex(8), timeout=None), robust=True)


def ruleset_forget() -> None:
    """Drop this process's snapshot (tests, whose flushes and fixtures bypass the ORM's signals)."""
    global _snapshot
    _snapshot = None
