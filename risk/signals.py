"""The signals: small named functions of one act, each cheap, each value stored with the decision.

A rule names a signal by its name. Three families are parsed from the name:

- `count.<counter>.<dimension>.<window>`  acts of that kind by this identity in the window (this one
  included), e.g. `count.checkout.device.10m`, `count.signup.ip.1h`, `count.payment_failed.device.1h`
- `keys.<counter>.<dimension>.<window>`   the keys (quantities) those acts took, e.g. `keys.checkout.email.1h`
- `emails.<dimension>.<window>`           distinct e-mails seen from this device, IP or network

counters: the events, plus `payment_failed` and `dispute_revealed`; dimensions: account, email, ip,
network, device; windows: 10m, 1h, 1d, 30d. Every other signal is in `NAMED` below. `extra.<name>` reads
a fact the caller passed in `RiskContext.extra` as it is.
"""

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from core import prepared
from core.ratelimit import RateAttempt
from core.sql import on_postgresql
from risk.context import EVENTS, RiskContext
from risk.velocity import WINDOWS, RedisExchange, counter_key, db_adjust, db_aggregates, db_exchange, uses_redis

COUNTERS = (*EVENTS, "payment_failed", "dispute_revealed")
DIMENSIONS = ("account", "email", "ip", "network", "device")
EMAIL_DIMENSIONS = ("device", "ip", "network")
# Acts whose e-mail counts towards "distinct e-mails per device / IP / network".
EMAIL_EVENTS = frozenset({"signup", "login", "checkout"})
VELOCITY = re.compile(
    rf"^(?P<what>count|keys)\.(?P<counter>{'|'.join(COUNTERS)})\.(?P<dimension>{'|'.join(DIMENSIONS)})"
    rf"\.(?P<window>{'|'.join(WINDOWS)})$"
    rf"|^emails\.(?P<edimension>{'|'.join(EMAIL_DIMENSIONS)})\.(?P<ewindow>{'|'.join(WINDOWS)})$"
)
NEW_HOURS = 24  # a device or network first seen this recently is "new"
# An identity the actor used this recently is not written again (its `last_seen` is that fresh): a
# returning buyer's every act would otherwise update their device's and network's rows.
TOUCH_SECONDS = 3600
# What reads the actor's history of this kind of act, and their seen devices and networks.
HISTORY_SIGNALS = frozenset({"anomaly.amount_z", "anomaly.unusual_hour", "anomaly.burst", "anomaly_score"})
SEEN_SIGNALS = frozenset({"new_device", "new_network", "anomaly.new_network", "anomaly_score"})
# A guest's seen devices and networks are those of their history (`Signals.seen`).
GUEST_HISTORY_SIGNALS = HISTORY_SIGNALS | SEEN_SIGNALS


_PARSED: dict[str, tuple[str, str, str, str, int] | None] = {}
NEW_AGE = timedelta(hours=NEW_HOURS)
TOUCH_AGE = timedelta(seconds=TOUCH_SECONDS)
BURST_AGE = timedelta(minutes=10)  # the anomaly's burst: the actor's acts of this kind this recently


def velocity_signal(name: str) -> tuple[str, str, str, str, int] | None:
    """A velocity signal's parts, (key kind, counter, dimension, count | weight | distinct, window
    seconds); None for any other signal. Parsed once per name: every assessment asks for the same few."""
    try:
        return _PARSED[name]
    except KeyError:
        pass
    match = VELOCITY.match(name)
    if match is None:
        parsed = None
    elif match["edimension"]:
        parsed = ("e", "any", match["edimension"], "distinct", WINDOWS[match["ewindow"]])
    else:
        what = "weight" if match["what"] == "keys" else "count"
        parsed = ("v", match["counter"], match["dimension"], what, WINDOWS[match["window"]])
    if len(_PARSED) < 4096:  # names come from rules (staff): few, but never an unbounded memory
        _PARSED[name] = parsed
    return parsed


@functools.lru_cache(maxsize=256)
def _velocity_names(names: tuple[str, ...]) -> tuple[tuple[str, tuple[str, str, str, str, int]], ...]:
    """The velocity signals among `names` with their parts: an act asks for the same names as the last."""
    return tuple((name, parsed) for name in names if (parsed := velocity_signal(name)) is not None)


@dataclass(frozen=True)
class Named:
    function: Callable[["Signals"], float | None]
    description: str


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_microseconds(text: str) -> datetime:
    return _EPOCH + timedelta(microseconds=int(text))


@dataclass
class Load:
    """A read of signals started (`Signals.load_start`) and not finished (`Signals.load_end`)."""

    names: tuple[str, ...]
    asks: list
    wanted: list[str]
    redis: bool
    fetch: dict | None = None  # what the read fetches besides the asks; None: nothing to read
    exchange: RedisExchange | None = None  # sent, its reply not read yet
    sql: tuple[str, list] | None = None  # the SQL read (PostgreSQL), not sent yet

    def sql_expression(self) -> tuple[str, list] | None:
        """The SQL read as ONE scalar expression (a text[]) and its parameters, for a caller's statement."""
        return (f"ARRAY({self.sql[0]})", self.sql[1]) if self.sql is not None else None

    def abandon(self) -> None:
        """Drop the exchange's connection if its reply will never be read (an error in between)."""
        if self.exchange is not None:
            self.exchange.abandon()
            self.exchange = None


@functools.lru_cache(maxsize=256)
def _read_text(velocity: str | None, history: bool, seen: bool, frozen: bool) -> str:
    """`Signals._read_sql`'s text by shape (`velocity`: the windows' aggregates, or None): the same few
    shapes come back on every act, so each is joined once."""
    branches = []
    if velocity is not None:
        branches.append(
            f"SELECT 'v' || array_to_string(ARRAY[{velocity}]::bigint[], ' ') "  # noqa: S608 - ours
            "FROM risk_velocityhit WHERE key = ANY(%s) AND at > %s"
        )
    if history:
        branches.append(
            "SELECT concat('h', (extract(epoch FROM at) * 1000000)::bigint, ' ', amount, ' ', network, ' ', device) "
            "FROM (SELECT amount, at, network, device FROM risk_decision "
            "WHERE actor = %s AND event = %s AND at < %s ORDER BY at DESC LIMIT 50) h"
        )
    if seen:
        branches.append(
            "SELECT concat('s', (extract(epoch FROM first_seen) * 1000000)::bigint, ' ', "
            "(extract(epoch FROM last_seen) * 1000000)::bigint, ' ', kind, ' ', value) FROM "
            "(SELECT kind, value, first_seen, last_seen FROM risk_seenidentity "
            "WHERE actor = %s AND (value = ANY(%s) OR first_seen <= %s) LIMIT 50) s"
        )
    if frozen:
        branches.append(
            "SELECT 'f' FROM (SELECT 1 FROM risk_reviewitem WHERE kind = 'user' "
            "AND subject_id = %s AND status IN ('open', 'rejected') LIMIT 1) f"
        )
    return " UNION ALL ".join(branches)


class Signals:
    """The signal values of one act, computed on first use and kept for the decision."""

    def __init__(self, *, event: str, context: RiskContext, subject: tuple[str, str] | None, now: datetime):
        self.event, self.context, self.subject, self.now = event, context, subject, now
        self.identities = context.identities()
        self.actor = context.actor_key  # whose history this is ("" for nobody), read by several signals
        self.guest = context.actor_id is None  # no account: an e-mail address at most
        self.values: dict[str, float | None] = {}
        self._seen: dict[tuple[str, str], datetime] | None = None
        self._seen_recent: set[tuple[str, str]] | None = None
        self._history: list[dict] | None = None
        self._writes: list = []  # this act's velocity hits not recorded yet (see `load`)
        self.frozen: bool | None = None  # whether the actor's account is frozen, when `load` was asked

    def get(self, name: str) -> float | None:
        if name not in self.values:
            self.load([name])
        return self.values[name]

    def prefetch(self, names) -> None:
        self.load(names)

    def load(self, names, *, writes: list | None = None, frozen_actor: int | None = None, probe: str | None = None):
        """Compute `names` with as few round trips as possible, and record this act's velocity `writes`.

        On PostgreSQL everything the names need from the database is ONE statement: the velocity
        windows as conditional aggregates of one scan of the hits (when the cache is not Redis), the
        actor's history, their seen devices and networks, and (`frozen_actor`) whether that account is
        frozen. With Redis, the hits are recorded and the windows counted in ONE command (a script).
        Without Redis the hits are written later with the decision (`risk.engine`), so the counts add them.
        Elsewhere (SQLite: the demo) the same reads are a few ORM queries. With Redis, `probe` names a
        key read raw in the same pipeline (the rules' version), returned."""
        return self.load_end(self.load_start(names, writes=writes, frozen_actor=frozen_actor, probe=probe))

    def load_start(
        self,
        names,
        *,
        writes: list | None = None,
        frozen_actor: int | None = None,
        probe: str | None = None,
        rate: RateAttempt | None = None,
    ) -> "Load":
        """`load`'s first half: what to read, the Redis exchange sent (its reply is read by `load_end`),
        and on PostgreSQL the SQL read built but not sent, so a caller may send it inside a statement of
        its own (`Load.sql_expression`) and hand its value to `load_end`.

        `rate`: a rate limit's attempt the exchange counts first (`core.ratelimit.RateAttempt`; over the
        limit `load_end` raises `RateLimited` and nothing was recorded); with no exchange to send it
        is counted here, by a command of its own, before anything is read."""
        if writes is not None:
            self._writes = list(writes)
        names = tuple(name for name in dict.fromkeys(names) if name not in self.values)
        asks, wanted = self._asks(names)
        actor = self.actor
        identities = [self.identities[kind] for kind in ("device", "network") if kind in self.identities]
        guest = self.guest
        need_history = (
            self._history is None
            and bool(actor)
            and not (GUEST_HISTORY_SIGNALS if guest else HISTORY_SIGNALS).isdisjoint(names)
        )
        need_seen = (
            not guest and self._seen is None and bool(actor and identities) and not SEEN_SIGNALS.isdisjoint(names)
        )
        if self._seen is None and not (actor and identities):
            self._seen = {}
        if self._history is None and not actor:
            self._history = []
        redis = uses_redis()
        load = Load(names=names, asks=asks, wanted=wanted, redis=redis)
        exchange = redis and bool(asks or self._writes or probe)  # one Redis command to send
        if rate is not None and not exchange:
            rate.count()  # no exchange to carry it
        if not (asks or need_history or need_seen or frozen_actor is not None or probe or (redis and self._writes)):
            return load  # named signals over what is read already (the anomaly score's parts): nothing to fetch
        load.fetch = {
            "history": need_history,
            "seen": need_seen,
            "frozen_actor": frozen_actor,
            "identities": identities,
        }
        # With Redis the exchange is sent first and its reply read after the SQL read: the waits overlap.
        if exchange:
            load.exchange = RedisExchange(now=self.now, writes=self._writes, asks=asks, probe=probe, rate=rate)
        if on_postgresql():
            load.sql = self._read_sql(
                asks=[] if redis else asks,
                history=need_history,
                seen=need_seen,
                frozen_actor=frozen_actor,
                identities=identities,
            )
        return load

    def load_end(self, load: "Load", rows: list[str] | None = None):
        """`load`'s second half: the SQL read sent now unless the caller sent it (`rows`: the value of
        `load.sql_expression()` in its statement), the Redis reply read, the values computed. Returns
        the probed key's value."""
        answers: list[float] = []
        probed = None
        if load.fetch is not None:
            try:
                answers = self._fetch(load, rows)
            except BaseException:
                load.abandon()
                raise
            if load.exchange is not None:
                answers, probed = load.exchange.receive()
                load.exchange = None
                self._writes = []  # recorded: later asks count them as they are
        for name, value in zip(load.wanted, answers, strict=True):
            self.values[name] = value
        for name in load.names:
            if name not in self.values:
                self.values[name] = self._named(name)
        return probed

    def _fetch(self, load: "Load", rows: list[str] | None) -> list[float]:
        """The SQL read's answers to the velocity asks (none with Redis), its other parts kept."""
        fetch, asks = load.fetch, load.asks
        if on_postgresql():
            if load.sql is None:
                return []
            if rows is None:
                rows = self._read_postgres(sql=load.sql[0], params=load.sql[1])
            return self._read_parse(rows, asks=[] if load.redis else asks, **fetch)
        answers = [] if load.redis else db_exchange(now=self.now, writes=self._writes, asks=asks)
        if fetch["history"]:
            self.history()
        if fetch["seen"]:
            self.seen()
        if fetch["frozen_actor"] is not None:
            from risk.models import ReviewItem, ReviewKind, ReviewStatus

            self.frozen = ReviewItem.objects.filter(
                kind=ReviewKind.USER,
                subject_id=str(fetch["frozen_actor"]),
                status__in=[ReviewStatus.OPEN, ReviewStatus.REJECTED],
            ).exists()
        return answers

    def _asks(self, names: tuple[str, ...]) -> tuple[list[tuple[str, str, int]], list[str]]:
        asks, wanted = [], []
        for name, (kind, counter, dimension, what, seconds) in _velocity_names(names):
            value = self.identities.get(dimension)
            if not value:
                self.values[name] = None  # no such identity (a guest has no account, an API client no device)
                continue
            asks.append((what, counter_key(kind, counter, dimension, value), seconds))
            wanted.append(name)
        return asks, wanted

    def _read_sql(self, *, asks, history: bool, seen: bool, frozen_actor: int | None, identities):
        """The read as ONE query (text, parameters), a UNION ALL of plain branches, each only when asked
        for (none asked: None). Plain branches plan in about half the time of CTEs with aggregates over
        them, and planning is most of what a read this small costs the server. Each row is one text,
        tagged by its first letter (v, h, s, f), so the whole read is also ONE value, a text[]
        (`Load.sql_expression`), that a caller may select in a statement of its own. Times are
        microseconds since the epoch (exact: PostgreSQL's `extract` is numeric)."""
        params = []
        velocity = None
        if asks:
            expressions, velocity_params, keys, oldest = db_aggregates(now=self.now, writes=self._writes, asks=asks)
            velocity = ", ".join(expressions)
            params += [*velocity_params, keys, oldest]
        if history:
            params += [self.actor, self.event, self.now]
        if seen:
            params += [self.actor, identities, self.now - NEW_AGE]
        if frozen_actor is not None:
            params.append(str(frozen_actor))
        text = _read_text(velocity, history, seen, frozen_actor is not None)
        return (text, params) if text else None

    def _read_postgres(self, *, sql: str, params: list) -> list[str]:
        """The read sent as a statement of its own: its rows."""
        with connection.cursor() as cursor:
            prepared.execute(cursor, sql, params)
            return [row[0] for row in cursor.fetchall()]

    def _read_parse(self, rows: list[str], *, asks, history: bool, seen: bool, frozen_actor, identities) -> list:
        answers: list = []
        history_rows, seen_rows, frozen = [], [], False
        for row in rows:
            tag = row[0]
            if tag == "v":
                answers = db_adjust(writes=self._writes, asks=asks, answers=[int(value) for value in row[1:].split()])
            elif tag == "h":
                at, amount, network, device = row[1:].split(" ", 3)
                history_rows.append(
                    {
                        "amount": int(amount) if amount else None,
                        "at": _from_microseconds(at),
                        "network": network,
                        "device": device,
                    }
                )
            elif tag == "s":
                first, last, kind, value = row[1:].split(" ", 3)
                seen_rows.append((kind, value, _from_microseconds(first), _from_microseconds(last)))
            else:
                frozen = True
        if history:
            self._history = history_rows
        if seen:
            self._seen_fill(seen_rows)
        if frozen_actor is not None:
            self.frozen = frozen
        return answers

    def _named(self, name: str) -> float | int | None:
        function = _FUNCTIONS.get(name)
        if function is None:
            if name.startswith("extra."):
                value = self.context.extra.get(name.removeprefix("extra."))
                return float(value) if isinstance(value, int | float) else None
            raise KeyError(f"unknown risk signal {name!r}")
        value = function(self)
        if value is None:
            return None
        value = float(value)
        # A whole number is kept as an int: stored and shown as 1, not 1.0, and neither rounded nor
        # written out by the float's digit conversion (a few thousand instructions each, ~10 per act).
        return int(value) if value.is_integer() else round(value, 4)

    # --- what several signals read, fetched once ---
    def seen(self) -> dict[tuple[str, str], datetime]:
        """When this actor first used this act's device and network (missing: never), and under
        ("history", kind) the first use of any device or network of theirs older than a day.

        A guest's are those of their earlier acts of this kind (`history`), whose decisions keep them: a
        guest is an address typed at a checkout, mostly once, and remembering each one's network in a row
        of its own cost every guest checkout a write. An account's are its memory (`SeenIdentity`), kept
        by every first-hand act of any kind."""
        if self._seen is None and self.guest:
            rows = [  # newest first, so the first use of each is the last row naming it
                (kind, row[kind], row["at"], row["at"])
                for row in self.history()
                for kind in ("device", "network")
                if row[kind]
            ]
            self._seen_fill(rows)
        if self._seen is None:
            from risk.models import SeenIdentity

            values = [self.identities[kind] for kind in ("device", "network") if kind in self.identities]
            actor = self.actor
            cutoff = self.now - NEW_AGE
            rows = (
                SeenIdentity.objects.filter(actor=actor)
                .filter(Q(value__in=values) | Q(first_seen__lte=cutoff))
                .values_list("kind", "value", "first_seen", "last_seen")[:50]
                if actor and values
                else []
            )
            self._seen_fill(rows)
        return self._seen

    def seen_recently(self) -> set[tuple[str, str]]:
        """This act's device and network that the actor's memory holds as used within `TOUCH_SECONDS`:
        the decision writes them no more (None: not read, write them all)."""
        return self._seen_recent

    def _seen_fill(self, rows) -> None:
        wanted = {(kind, self.identities[kind]) for kind in ("device", "network") if kind in self.identities}
        cutoff = self.now - NEW_AGE
        touched = self.now - TOUCH_AGE
        self._seen, self._seen_recent = {}, set()
        for kind, value, first, last in rows:
            if (kind, value) in wanted:
                self._seen[(kind, value)] = first
                if touched < last <= self.now:
                    self._seen_recent.add((kind, value))
            if first <= cutoff:
                self._seen[("history", kind)] = first

    def history(self) -> list[dict]:
        """The actor's own earlier acts of this kind (the latest 50): what the anomaly score compares with."""
        if self._history is None:
            from risk.models import Decision

            actor = self.actor
            self._history = (
                list(
                    Decision.objects.filter(actor=actor, event=self.event, at__lt=self.now)
                    .order_by("-at")
                    .values("amount", "at", "network", "device")[:50]
                )
                if actor
                else []
            )
        return self._history


def _new(signals: Signals, kind: str) -> float | None:
    """1 when an actor with an established history (a device or network used over a day ago) acts from
    one first used within the last day; 0 otherwise. Someone risk has never seen before has no "usual"
    device: that is what account age is for, not this signal."""
    value = signals.identities.get(kind)
    if value is None or not signals.actor:
        return None
    seen = signals.seen()
    if ("history", kind) not in seen:
        return 0.0
    first = seen.get((kind, value))
    return 1.0 if first is None or first > signals.now - NEW_AGE else 0.0


def _account_age_days(signals: Signals) -> float | None:
    created = signals.context.actor_created_at
    return None if created is None else (signals.now - created).total_seconds() / 86400


def _hours_since_security_change(signals: Signals) -> float | None:
    changed = signals.context.security_changed_at
    return None if changed is None else (signals.now - changed).total_seconds() / 3600


def _subject_flagged(signals: Signals) -> float | None:
    from risk.models import Decision

    if "subject_flagged" in signals.context.extra:  # the caller read it with the subject's context
        return float(signals.context.extra["subject_flagged"])
    if signals.subject is None:
        return None
    kind, pk = signals.subject
    return float(
        Decision.objects.filter(subject_type=kind, subject_id=str(pk), outcome__in=["review", "freeze"]).exists()
    )


def _merchant_rate(signals: Signals, key: str) -> float | None:
    orders = signals.context.extra.get("merchant_orders_30d")
    if not isinstance(orders, int) or orders < settings.RISK_MERCHANT_MIN_ORDERS:
        return None
    return 100.0 * (signals.context.extra.get(key) or 0) / orders


# --- the anomaly score: this act against the actor's own history, in explainable parts ---------------


def _amount_z(signals: Signals) -> float | None:
    amounts = [row["amount"] for row in signals.history() if row["amount"] is not None]
    if signals.context.amount is None or len(amounts) < 5:
        return None
    mean = sum(amounts) / len(amounts)
    spread = math.sqrt(sum((a - mean) ** 2 for a in amounts) / len(amounts))
    # A buyer who always spends the same has no spread: a tenth of the mean stands in for it.
    return (signals.context.amount - mean) / max(spread, mean * 0.1, 1)


def _unusual_hour(signals: Signals) -> float | None:
    hours = [row["at"].hour for row in signals.history()]
    if len(hours) < 10:
        return None
    now = signals.now.hour
    near = sum(1 for hour in hours if min((hour - now) % 24, (now - hour) % 24) <= 1)
    return 1.0 if near == 0 else 0.0


def _anomaly_new_network(signals: Signals) -> float | None:
    return _new(signals, "network")


def _burst(signals: Signals) -> float | None:
    since = signals.now - BURST_AGE
    return float(sum(1 for row in signals.history() if row["at"] > since))


ANOMALY_WEIGHTS = {"anomaly.amount_z": 40, "anomaly.unusual_hour": 20, "anomaly.new_network": 20, "anomaly.burst": 20}


# Each part's (weight, shift, scale): its value less the shift, over the scale, is its share (0 to 1)
# of the weight. Two quick acts are normal; the third starts a burst.
_ANOMALY_PARTS = {
    "anomaly.amount_z": (ANOMALY_WEIGHTS["anomaly.amount_z"], 0.0, 4.0),
    "anomaly.unusual_hour": (ANOMALY_WEIGHTS["anomaly.unusual_hour"], 0.0, 1.0),
    "anomaly.new_network": (ANOMALY_WEIGHTS["anomaly.new_network"], 0.0, 1.0),
    "anomaly.burst": (ANOMALY_WEIGHTS["anomaly.burst"], 2.0, 5.0),
}


def _anomaly_part(name: str, value: float | None) -> float:
    if value is None:
        return 0.0
    weight, shift, scale = _ANOMALY_PARTS[name]
    return weight * min(max(value - shift, 0.0) / scale, 1.0)


def _anomaly_score(signals: Signals) -> float:
    # The parts read only what the score's own load read (the history and seen identities; any missing
    # are read on first use), so each is computed straight away.
    values = signals.values
    score = 0.0
    for name in ANOMALY_WEIGHTS:
        if name not in values:
            values[name] = signals._named(name)
        score += _anomaly_part(name, values[name])
    return round(score)


NAMED: dict[str, Named] = {
    "amount": Named(lambda s: s.context.amount, _("the amount, in minor units (cents, fen)")),
    "quantity": Named(lambda s: s.context.quantity, _("how many keys the order takes")),
    "account_age_days": Named(_account_age_days, _("days since the account was created (none for guests)")),
    "new_device": Named(lambda s: _new(s, "device"), _("1 if the actor first used this device in the last day")),
    "new_network": Named(lambda s: _new(s, "network"), _("1 if the actor first used this network in the last day")),
    "hours_since_security_change": Named(
        _hours_since_security_change, _("hours since the account's password or second factor changed")
    ),
    "subject_flagged": Named(_subject_flagged, _("1 if an earlier decision held this same order for review")),
    "payout_account_age_hours": Named(
        lambda s: s.context.extra.get("payout_account_age_hours"), _("hours since the payout account was added")
    ),
    "merchant_dispute_rate": Named(
        lambda s: _merchant_rate(s, "merchant_disputes_30d"),
        _("percent of the merchant's orders of the last 30 days disputed (with enough orders)"),
    ),
    "merchant_used_dispute_rate": Named(
        lambda s: _merchant_rate(s, "merchant_used_disputes_30d"),
        _("percent of the merchant's orders of the last 30 days disputed as 'already used'"),
    ),
    "anomaly.amount_z": Named(_amount_z, _("how many spreads the amount is from the actor's usual amounts")),
    "anomaly.unusual_hour": Named(_unusual_hour, _("1 if the actor never acted at this hour before")),
    "anomaly.new_network": Named(_anomaly_new_network, _("1 if an actor with a history acts from a new network")),
    "anomaly.burst": Named(_burst, _("the actor's acts of this kind in the last 10 minutes")),
    "anomaly_score": Named(_anomaly_score, _("0 to 100: the anomaly parts above, weighted 40/20/20/20")),
}


# Each named signal's function, looked up once per act and name.
_FUNCTIONS = {name: named.function for name, named in NAMED.items()}


def signal_names() -> list[str]:
    """Every signal a rule may name (the velocity families spelled out)."""
    names = list(NAMED)
    for what in ("count", "keys"):
        names += [f"{what}.{c}.{d}.{w}" for c in COUNTERS for d in DIMENSIONS for w in WINDOWS]
    names += [f"emails.{d}.{w}" for d in EMAIL_DIMENSIONS for w in WINDOWS]
    return names


def signal_is_known(name: str) -> bool:
    return name in NAMED or VELOCITY.match(name) is not None or re.fullmatch(r"extra\.[a-z0-9_]+", name) is not None


def signal_describe(name: str) -> str:
    """The signal in plain words, for the staff page."""
    if name in NAMED:
        return str(NAMED[name].description)
    if name.startswith("extra."):
        return str(_("the caller's fact “%(name)s”")) % {"name": name.removeprefix("extra.")}
    match = VELOCITY.match(name)
    if match is None:
        return name
    if match["edimension"]:
        return str(_("distinct e-mail addresses seen from this %(dimension)s in the last %(window)s")) % {
            "dimension": match["edimension"],
            "window": match["ewindow"],
        }
    words = {"count": _("acts"), "keys": _("keys taken by acts")}[match["what"]]
    return str(_("%(what)s of kind “%(counter)s” by this %(dimension)s in the last %(window)s")) % {
        "what": words,
        "counter": match["counter"],
        "dimension": match["dimension"],
        "window": match["window"],
    }
