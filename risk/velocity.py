"""Sliding-window counters per identity (account, e-mail, IP, network, device), never per product or
shop: a busy shop is not an attack.

With a Redis cache (`CACHE_URL=redis://…`) each (event, dimension, value) is a sorted set of hits scored
by time, trimmed to the longest window and expiring with it; every process and machine shares it. Any
other cache (the demo, tests) keeps the hits in the database (`VelocityHit`). Both answer the same three
questions: how many hits, how many keys (the sum of weights), how many distinct members in a window.
"""

import hashlib
import itertools
import os
import secrets
import threading
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.ratelimit import RateAttempt

WINDOWS = {"10m": 600, "1h": 3600, "1d": 86400, "30d": 30 * 86400}
LONGEST = max(WINDOWS.values())
LONGEST_TEXT = str(LONGEST)


@lru_cache(maxsize=4096)  # an assessment digests each of its few identities for several counters
def identity_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def counter_key(kind: str, event: str, dimension: str, value: str) -> str:
    return f"risk:{kind}:{event}:{dimension}:{identity_digest(value)}"


# What the cache settings say, kept until they change: every act asks, and `settings` and `caches` are
# lazy proxies with thread-local lookups behind them (a few µs per look). Dropped when a test changes
# CACHES, and in a forked child (which must not share its parent's connections).
_settings_seen: dict[str, object] = {}
_generation = 0  # bumped with the above: what each thread kept (`_Held`) is made again


def _cache_settings_changed() -> None:
    global _generation
    _settings_seen.clear()
    _generation += 1


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs) -> None:
    if setting == "CACHES":
        _cache_settings_changed()


def cache_setting(name: str, make):
    """What `make()` derives from the cache settings, made once until they change."""
    try:
        return _settings_seen[name]
    except KeyError:
        value = _settings_seen[name] = make()
        return value


def uses_redis() -> bool:
    return cache_setting("redis", lambda: settings.CACHES["default"]["BACKEND"].endswith("RedisCache"))


Hit = tuple[str, int, str | None]  # (key, weight, member): one act counted under one key
Ask = tuple[str, str, int]  # (what, key, window seconds), what ∈ count | weight | distinct


class Velocity:
    """Record hits at once (`with Velocity(now) as v: v.record(...)`): what happens to an earlier act
    (a failed payment). An assessment instead uses `exchange`, which counts and records in one round
    trip."""

    def __init__(self, now: datetime):
        self.now = now
        self.redis = uses_redis()
        self._writes: list[Hit] = []

    def record(self, *, key: str, weight: int = 1, member: str | None = None) -> None:
        self._writes.append((key, weight, member))

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
            pipe = cache._cache.get_client(write=True).pipeline(transaction=False)
            _redis_writes(pipe, self._writes, self.now)
            pipe.execute()
        else:
            from risk.models import VelocityHit

            VelocityHit.objects.bulk_create(hit_rows(self._writes, self.now))
        self._writes = []


def hit_rows(writes: list[Hit], now: datetime) -> list:
    from risk.models import VelocityHit

    return [
        VelocityHit(key=key, member=member or secrets.token_hex(8), weight=weight, at=now)
        for key, weight, member in writes
    ]


def _redis_writes(pipe, writes: list[Hit], now: datetime) -> None:
    score = now.timestamp()
    for key, weight, member in writes:
        # A plain hit is unique; its weight rides in the member so "keys in a window" can sum it.
        name = member or f"{secrets.token_hex(6)}:{weight}"
        pipe.zadd(key, {name: score})
        pipe.zremrangebyscore(key, "-inf", score - LONGEST)
        pipe.expire(key, LONGEST)


# One command for the whole exchange: a rate limit's attempt counted first when one rides along (its
# counter's key last among KEYS, its expiry and limit last among ARGV; over the limit nothing else is
# done and the reply is "<count>:"), then the version read, the hits recorded (each set expiring with
# the longest window, and trimmed to it when ARGV[3] is "1": one act in `TRIM_EVERY`), the windows
# counted (numbers written as integers: Lua's own number-to-text is a float's, several times the cost).
# Run server-side, so the client packs and parses
# one command instead of ~35 (three per hit, one per window: over a millisecond of CPU per checkout).
# The reply is ONE string, "<the rate limit's count>:" when one rides along, the windows' answers joined by
# spaces, then "|" and the version's raw value ("" when unset): one bulk string parses in a fraction of
# the time of an array of integers.
EXCHANGE = """
local now, longest, trim, writes = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4])
local rate = ''
local rate_at = 6 + writes + 2 * tonumber(ARGV[5 + writes])
if ARGV[rate_at] then
  local key = KEYS[#KEYS]
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, ARGV[rate_at]) end
  rate = string.format('%d:', count)
  if count > tonumber(ARGV[rate_at + 1]) then return rate end
end
local version = redis.call('GET', KEYS[1]) or ''
local out = {}
local arg = 5
for i = 1, writes do
  local key = KEYS[1 + i]
  redis.call('ZADD', key, ARGV[1], ARGV[arg])
  if trim then redis.call('ZREMRANGEBYSCORE', key, '-inf', now - longest) end
  redis.call('EXPIRE', key, ARGV[2])
  arg = arg + 1
end
local asks = tonumber(ARGV[arg])
arg = arg + 1
for i = 1, asks do
  local key, what, since = KEYS[1 + writes + i], ARGV[arg], ARGV[arg + 1]
  arg = arg + 2
  if what == 'weight' then
    local total = 0
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, since, '+inf')) do
      total = total + (tonumber(string.match(member, ':(%d+)$')) or 0)
    end
    out[#out + 1] = string.format('%d', total)
  else
    out[#out + 1] = string.format('%d', redis.call('ZCOUNT', key, since, '+inf'))
  end
end
return rate .. table.concat(out, ' ') .. '|' .. version
"""

_local = threading.local()  # per thread, as Django's cache objects are: its `_Held`

# A hit's member needs to be unique only among its set's members: a random token per process (made
# again in a forked child, which would otherwise share its parent's) and a count of the process's acts
# make it so without a call for random bytes per act. The count also picks the acts that trim their
# sets: a member past the longest window is never counted (every window asks "since"), so trimming on
# one act in TRIM_EVERY only bounds a busy set's memory, and the other acts save a command per hit.
TRIM_EVERY = 16
_acts = itertools.count()
_token = secrets.token_hex(4)


def _forked() -> None:
    global _token
    _token = secrets.token_hex(4)
    _cache_settings_changed()


os.register_at_fork(after_in_child=_forked)


class _Held:
    """The exchange script on a Redis client made once per thread (Django makes a new client, with its
    table of ~170 reply callbacks, on every `get_client`), and a connection the thread keeps for its
    exchanges: taken from the client's pool once, never given back (the pool's get and release, with
    their lock and bookkeeping, cost more than the rest of the exchange's Python). An exchange started
    while the thread's is still in flight takes one from the pool as before."""

    def __init__(self):
        client = cache._cache.get_client(write=True)
        self.generation = _generation  # made again when the cache settings change, and in a forked child
        self.script = client.register_script(EXCHANGE)
        self.pool = client.connection_pool
        self.connection = self.pool.get_connection()
        self.busy = False


def _redis_held() -> _Held:
    held = getattr(_local, "held", None)
    if held is None or held.generation != _generation:
        held = _local.held = _Held()
    return held


def _command(parts: list[str]) -> bytes:
    """One Redis command as RESP bytes (an array of bulk strings), packed here: redis-py's packer encodes
    and measures each argument through a few calls of its own, a tenth of a millisecond for the
    exchange's ~40 arguments; one f-string and one encode do the same work."""
    text = f"*{len(parts)}\r\n" + "".join([f"${len(part)}\r\n{part}\r\n" for part in parts])
    if text.isascii():  # then every character is one byte, so the lengths above are byte lengths
        return text.encode()
    encoded = [part.encode() for part in parts]
    return b"".join([b"*%d\r\n" % len(encoded), *[b"$%d\r\n%b\r\n" % (len(part), part) for part in encoded]])


def _reply(connection) -> bytes:
    """The exchange's reply, ONE bulk string (`$<length>` CRLF, the bytes, CRLF), read from the socket
    here: redis-py's reader goes through its buffer and parser in a few dozen calls for it. An error
    reply raises the exception redis-py would (NOSCRIPT: `NoScriptError`); a connection closed or
    timed out is dropped and raises, as redis-py does. With bytes left in redis-py's buffer (never,
    as every reply is read whole) redis-py reads it."""
    buffer = connection._parser._buffer
    if buffer is None or buffer.unread_bytes():
        return connection.read_response()
    sock = connection._sock
    try:
        data = sock.recv(_READ_SIZE)
        while data:
            head, crlf, rest = data.partition(b"\r\n")
            if crlf and head[:1] == b"-":
                raise connection._parser.parse_error(head[1:].decode(errors="replace"))
            if crlf and (head[:1] != b"$" or not head[1:].isdigit()):
                connection.disconnect()  # an answer to something else: not sent again, as a closed one is
                raise InvalidResponse(f"not the risk exchange's reply: {head[:40]!r}")
            if crlf and len(rest) >= (length := int(head[1:])) + 2:
                return rest[:length]
            more = sock.recv(_READ_SIZE)
            data = data + more if more else b""
        raise RedisConnectionError("Connection closed by server.")
    except ResponseError:
        raise  # an answer: the connection is fine
    except TimeoutError as error:  # socket.timeout
        connection.disconnect()
        raise RedisTimeoutError("Timeout reading from Redis") from error
    except (OSError, RedisConnectionError) as error:
        connection.disconnect()  # its stream is not where the next command expects it: connected anew
        if isinstance(error, RedisConnectionError):
            raise
        raise RedisConnectionError(f"Error while reading from Redis: {error}") from error


_READ_SIZE = 65536


def _seconds(micros: int) -> str:
    """Seconds since the epoch as Redis takes a score, written from whole microseconds: a float's
    `repr` finds its shortest digits by big-number arithmetic, several times the cost (five per act)."""
    return "%d.%06d" % divmod(micros, 1_000_000)  # noqa: UP031 - a fifth cheaper than the f-string


class RedisExchange:
    """One exchange sent now (the script: the version read, the hits recorded, the windows counted) and
    its reply read later with `receive`, so PostgreSQL answers the assessment's SQL read while Redis
    works: the two waits overlap instead of adding up. `abandon` drops the connection if the reply is
    never read (an error in between), so no later command reads this reply as its own.

    The EVALSHA is packed by hand (`_command`) and sent with `send_packed_command` on the thread's
    connection (`_Held`); a Redis that lost the script (restarted, `SCRIPT FLUSH`) answers NOSCRIPT and
    the exchange runs again through redis-py's `Script`, which loads it."""

    def __init__(
        self,
        *,
        now: datetime,
        writes: list[Hit],
        asks: list[Ask],
        probe: str | None = None,
        rate: RateAttempt | None = None,
    ):
        micros = round(now.timestamp() * 1_000_000)  # exact: the float is within a microsecond's tenth
        self.asks, self.probe, self.rate = asks, probe, rate
        self.keys = [probe or "risk:none", *(key for key, _w, _m in writes), *(key for _what, key, _s in asks)]
        # A plain hit is unique (the act's token, numbered per hit); its weight rides in the member so
        # "keys in a window" can sum it.
        act = next(_acts)
        token = f"{_token}{act:x}."
        args = [_seconds(micros), LONGEST_TEXT, "1" if act % TRIM_EVERY == 0 else "0", str(len(writes))]
        args += [member or f"{token}{number}:{weight}" for number, (_key, weight, member) in enumerate(writes)]
        args.append(str(len(asks)))
        since: dict[int, str] = {}  # by window: the asks share a few
        for what, _key, seconds in asks:
            if seconds not in since:
                since[seconds] = _seconds(micros - seconds * 1_000_000)
            args += ["weight" if what == "weight" else "count", since[seconds]]
        if rate is not None:
            key, expiry, limit = rate.redis_window()
            self.keys.append(key)
            args += [str(expiry), str(limit)]
        self.args = args
        self.held = held = _redis_held()
        self.script = held.script
        if held.busy:
            self.connection, self.kept = held.pool.get_connection(), False
        else:
            self.connection, self.kept, held.busy = held.connection, True, True
        self.command = _command(["EVALSHA", self.script.sha, str(len(self.keys)), *self.keys, *args])
        self.kept_lost = False  # the kept connection was found closed by Redis, and made anew
        try:
            try:
                self.connection.send_packed_command([self.command], check_health=False)
            except RedisConnectionError:
                if not self.kept:
                    raise
                # The kept connection was closed by Redis (a restart, a timeout) and the send found out:
                # redis-py dropped it, and sending again connects it anew.
                self.kept_lost = True
                self.connection.send_packed_command([self.command], check_health=False)
        except BaseException:
            self.abandon()
            raise

    def receive(self) -> tuple[list[int], bytes | None]:
        """(the windows' answers, the probed key's raw value or None). Raises `RateLimited` when the rate
        limit's attempt that rode along is over its limit (nothing else was done then).

        A kept connection is not checked before each send (a poll and two more system calls per act):
        one that Redis closed while it sat idle takes the command and answers with its end, and then the
        command, which Redis never read, is sent again on the connection made anew. Once only: were
        Redis to have run it and closed the connection before answering, its hits would be the same
        members again (no act counts twice) and the rate limit would count the attempt twice."""
        try:
            try:
                result = _reply(self.connection)
            except RedisConnectionError:
                if not self.kept or self.kept_lost:
                    raise
                self.kept_lost = True
                self.connection.send_packed_command([self.command], check_health=False)
                result = _reply(self.connection)
        except NoScriptError:  # a Redis that lost its scripts (restarted): loaded, then run again
            try:
                result = self.script(keys=self.keys, args=self.args)
            except BaseException:
                self.abandon()
                raise
        except BaseException:
            self.abandon()
            raise
        self._done()
        if self.rate is not None:
            count, _colon, result = result.partition(b":")
            self.rate.carried(int(count))
        answers, _bar, version = result.partition(b"|")  # the answers are digits and spaces: the first "|" ends them
        probed = version if self.probe is not None and version != b"" else None
        return [int(value) for value in answers.split()], probed

    def abandon(self) -> None:
        if self.connection is not None:
            self.connection.disconnect()  # its reply unread: the next use connects it again
            self._done()

    def _done(self) -> None:
        if self.kept:
            self.held.busy = False
        else:
            self.held.pool.release(self.connection)
        self.connection = None


def redis_exchange(
    *, now: datetime, writes: list[Hit], asks: list[Ask], probe: str | None = None, rate: RateAttempt | None = None
):
    """Record `writes` and answer `asks` (this act included) in ONE Redis command (a script), which
    also reads the raw value of the key `probe` when given (the rules' version), and first counts the
    attempt `rate` when given: (answers, value)."""
    return RedisExchange(now=now, writes=writes, asks=asks, probe=probe, rate=rate).receive()


# --- the database: the act's own hits are written later, with its decision (one statement) -----------


def db_aggregates(*, now: datetime, writes: list[Hit], asks: list[Ask]) -> tuple[list[str], list, list[str], datetime]:
    """The SQL of `asks` over `risk_velocityhit` as conditional aggregates of ONE scan: (the select
    expressions, their parameters, the keys to scan, the oldest time). Answers leave out this act's own
    hits (not written yet): `db_adjust` adds them."""
    expressions, params = [], []
    for what, key, seconds in asks:
        since = now - timedelta(seconds=seconds)
        if what == "count":
            expressions.append("COUNT(*) FILTER (WHERE key = %s AND at > %s)")
            params += [key, since]
        elif what == "weight":
            expressions.append("COALESCE(SUM(weight) FILTER (WHERE key = %s AND at > %s), 0)")
            params += [key, since]
        else:
            mine = sorted({member for hit_key, _weight, member in writes if hit_key == key and member})
            expressions.append(
                "COUNT(DISTINCT member) FILTER (WHERE key = %s AND at > %s"
                + (" AND NOT (member = ANY(%s)))" if mine else ")")
            )
            params += [key, since, *([mine] if mine else [])]
    keys = sorted({key for _what, key, _seconds in asks})
    oldest = now - timedelta(seconds=max(seconds for _what, _key, seconds in asks))
    return expressions, params, keys, oldest


def db_adjust(*, writes: list[Hit], asks: list[Ask], answers) -> list[float]:
    """Add this act's own hits (all at `now`, so inside every window) to the database's answers."""
    adjusted = []
    for (what, key, _seconds), answer in zip(asks, answers, strict=True):
        mine = [(weight, member) for hit_key, weight, member in writes if hit_key == key]
        if what == "count":
            adjusted.append(int(answer or 0) + len(mine))
        elif what == "weight":
            adjusted.append(int(answer or 0) + sum(weight for weight, _member in mine))
        else:
            adjusted.append(int(answer or 0) + len({member for _weight, member in mine if member}))
    return adjusted


def db_exchange(*, now: datetime, writes: list[Hit], asks: list[Ask]) -> list[float]:
    """`asks` answered from the database in one statement, this act included (any database)."""
    if not asks:
        return []
    from django.db import connection

    from risk.models import VelocityHit

    expressions, params, keys, oldest = db_aggregates(now=now, writes=writes, asks=asks)
    if connection.vendor == "postgresql":
        sql = f"SELECT {', '.join(expressions)} FROM risk_velocityhit WHERE key = ANY(%s) AND at > %s"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, keys, oldest])
            row = cursor.fetchone()
        return db_adjust(writes=writes, asks=asks, answers=row)
    # Elsewhere (SQLite: the demo) the same conditional aggregates through the ORM.
    from django.db.models import Count, Q, Sum

    aggregates = {}
    for number, (what, key, seconds) in enumerate(asks):
        window = Q(key=key, at__gt=now - timedelta(seconds=seconds))
        if what == "count":
            aggregates[f"a{number}"] = Count("pk", filter=window)
        elif what == "weight":
            aggregates[f"a{number}"] = Sum("weight", filter=window)
        else:
            mine = {member for hit_key, _weight, member in writes if hit_key == key and member}
            aggregates[f"a{number}"] = Count("member", distinct=True, filter=window & ~Q(member__in=mine))
    found = VelocityHit.objects.filter(key__in=keys, at__gt=oldest).aggregate(**aggregates)
    return db_adjust(writes=writes, asks=asks, answers=[found[f"a{number}"] for number in range(len(asks))])


def velocity_prune(*, now: datetime) -> int:
    """Delete database hits older than the longest window (the Redis sets trim themselves)."""
    from risk.models import VelocityHit

    deleted, _ = VelocityHit.objects.filter(at__lt=now - timedelta(seconds=LONGEST)).delete()
    return deleted
