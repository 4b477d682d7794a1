"""The engine: one call per act, one stored decision with every reason.

    decision = risk.assess(event="checkout", context=RiskContext(...), subject=None, now=now)

In order: count the act in its sliding windows; an account frozen by an earlier decision stays frozen
for buying and withdrawing; the block list; then the active rules of the event, harshest outcome first
(freeze/block, review, challenge, allow) and by pk, the first that matches decides; nothing matching
allows. The decision row keeps the event, outcome, anomaly score, the deciding rule and every signal
value computed, and names its subject (order, withdrawal, dispute, user, merchant) when known.
"""

import functools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, transaction

from core import prepared
from core.ratelimit import RateAttempt
from core.sql import on_postgresql
from risk.blocklist import blocklist_match
from risk.context import EVENTS, Outcome, RiskContext
from risk.models import Decision, ReviewKind, SeenIdentity, VelocityHit
from risk.ruleset import ruleset, ruleset_unchecked, version_key
from risk.signals import ANOMALY_WEIGHTS, EMAIL_DIMENSIONS, EMAIL_EVENTS, Load, Signals
from risk.velocity import counter_key, hit_rows, identity_digest, uses_redis

# A frozen account may still sign in (to see its orders) but not buy, withdraw or change payouts.
FROZEN_EVENTS = frozenset({"checkout", "withdrawal", "payout_account_change"})
# What every decision keeps even when no rule asks for it.
ALWAYS = ("amount", "quantity", "new_device", "new_network", *ANOMALY_WEIGHTS, "anomaly_score")
# Acts that come from a gateway, not a person: nothing new is learnt about devices or velocity there
# (the person's identities are the checkout's), so only the rules' own signals are computed.
SECOND_HAND = frozenset({"payment"})


def _hits(signals: Signals, event: str, context: RiskContext) -> list[tuple[str, int, str | None]]:
    """The act's velocity hits: one per counter and identity, and its e-mail under device, IP, network."""
    identities = signals.identities
    weight = max(context.quantity or 1, 1)
    hits: list[tuple[str, int, str | None]] = [
        (counter_key("v", counter, dimension, value), weight, None)
        for counter in (event, *context.count_as)
        for dimension, value in identities.items()
    ]
    email = identities.get("email")
    if event in EMAIL_EVENTS and email:
        member = identity_digest(email)  # the first 24 hex digits of the address's SHA-256
        for dimension in EMAIL_DIMENSIONS:
            if dimension in identities:
                hits.append((counter_key("e", "any", dimension, identities[dimension]), 1, member))
    return hits


def account_frozen(user_pk: int) -> bool:
    """A freeze holds while its review item is open, and after staff rejected it ("keep frozen")."""
    from risk.models import ReviewItem, ReviewStatus

    return ReviewItem.objects.filter(
        kind=ReviewKind.USER, subject_id=str(user_pk), status__in=[ReviewStatus.OPEN, ReviewStatus.REJECTED]
    ).exists()


@dataclass
class Assessment:
    """An act decided but not stored yet: `store` writes the decision (with the act's velocity hits
    when they live in the database, and the actor's seen device and network) in ONE statement.

    Split from `assess` so a checkout can decide before it reserves anything and store the decision
    inside the order's own transaction, naming the order (escrow.services.order_place_assessed)."""

    event: str
    context: RiskContext
    now: datetime
    signals: Signals
    outcome: str
    deciding: Any  # the Rule that decided, or None
    reasons: list[dict[str, Any]]
    frozen: bool
    first_hand: bool
    db_hits: list[tuple[str, int, str | None]] = field(default_factory=list)

    def refuses(self, *, challenge_passed: bool = False) -> bool:
        """Whether `decision_enforce` would refuse the act."""
        return self.outcome in Outcome.REFUSING or (self.outcome == Outcome.CHALLENGE and not challenge_passed)

    def _values(self, *, subject: tuple[str, int | str] | None, challenge_passed: bool) -> dict[str, Any]:
        """The decision's row by column (attname), the id aside: what `store_sql` sends, and what
        `_decision_new` builds the Decision from."""
        context, identities = self.context, self.signals.identities
        return {
            "at": self.now,
            "event": self.event,
            "outcome": self.outcome,
            "score": int(self.signals.values.get("anomaly_score") or 0),
            "rule_id": self.deciding.pk if self.deciding is not None else None,
            "reasons": self.reasons,
            "signals": self.signals.values,
            "subject_type": subject[0] if subject else "",
            "subject_id": str(subject[1]) if subject else "",
            "actor": self.signals.actor,
            "email": context.email.strip().lower()[:254],
            "ip": context.ip or None,
            "network": identities.get("network", ""),
            "device": context.device[:64],
            "amount": context.amount,
            "currency": context.currency,
            "challenge_passed": challenge_passed,
        }

    def _decision(self, values: dict[str, Any]) -> Decision:
        decision = _decision_new(values)
        if self.deciding is not None:
            decision.rule = self.deciding  # as Decision(rule=…) would: no query to read it back
        return decision

    def _seen(self) -> list[tuple[str, str]]:
        """The device and network to remember as the actor's (first-hand acts of an account only: a
        guest's are read from their decisions, `Signals.seen`), but those the actor's memory already
        holds as used within the last `TOUCH_SECONDS`."""
        identities = self.signals.identities
        if not (self.first_hand and self.signals.actor) or self.signals.guest:
            return []
        recent = self.signals.seen_recently() or ()
        return [
            (kind, identities[kind])
            for kind in ("device", "network")
            if kind in identities and (kind, identities[kind]) not in recent
        ]

    def _freezing(self) -> bool:
        return self.outcome == Outcome.FREEZE and self.context.actor_id is not None and not self.frozen

    def store(self, *, subject: tuple[str, int | str] | None = None, challenge_passed: bool = False) -> Decision:
        """Write the decision about `subject`; may run again after a rollback undid an earlier store."""
        values = self._values(subject=subject, challenge_passed=challenge_passed)
        decision = self._decision(values)
        context, now, actor = self.context, self.now, self.signals.actor
        seen = self._seen()
        freezing = self._freezing()
        postgres = on_postgresql()
        with transaction.atomic() if freezing or not postgres else _nothing():
            if postgres:
                sql, params = _insert_sql(bool(self.db_hits), len(seen)), _insert_params(values, self.db_hits, seen)
                with connection.cursor() as cursor:
                    prepared.execute(cursor, sql, params)
                    _stored(decision, cursor.fetchone()[0])
            else:
                decision.save(force_insert=True)
                VelocityHit.objects.bulk_create(hit_rows(self.db_hits, self.now))
                if seen:
                    SeenIdentity.objects.bulk_create(
                        [
                            SeenIdentity(actor=actor, kind=kind, value=value, first_seen=now, last_seen=now)
                            for kind, value in seen
                        ],
                        update_conflicts=True,
                        unique_fields=["actor", "kind", "value"],
                        update_fields=["last_seen"],
                    )
            if freezing:
                from risk.services import review_open

                review_open(
                    kind=ReviewKind.USER, subject_id=context.actor_id, email=context.email, decision=decision, now=now
                )
        return decision

    def store_sql(
        self, *, name: str, subject: tuple[str, int | str], challenge_passed: bool = False
    ) -> tuple[str, list, Callable[[int], Decision]] | None:
        """`store` as members of a caller's `WITH` list (PostgreSQL), for a checkout that writes its
        order and the decision naming it in ONE statement (escrow/checkout_sql.py): the same rows, the
        act's velocity hits and seen identities with them. `<name>` is the decision's INSERT `RETURNING
        id` (one row): the caller selects `(SELECT id FROM <name>)` and passes that value to the
        returned `finish`, which gives the Decision. None where the decision must be stored on its own:
        not PostgreSQL, or a freeze (it opens a review item): call `store` then.

        On a rollback of the caller's statement nothing of it is written: `store` may run after."""
        if not on_postgresql() or self._freezing():
            return None
        values = self._values(subject=subject, challenge_passed=challenge_passed)
        seen = self._seen()
        members = _insert_members(name, bool(self.db_hits), len(seen))
        params = _insert_params(values, self.db_hits, seen)

        def finish(pk: int) -> Decision:
            decision = self._decision(values)  # built once written: the statement needs only its values
            _stored(decision, pk)
            return decision

        return members, params, finish


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@functools.cache
def _decision_columns() -> tuple:
    """Decision's columns but the id, in the model's order (what `Decision(None, *values)` takes)."""
    fields = Decision._meta.concrete_fields
    assert fields[0].primary_key
    return tuple(fields[1:])


@functools.cache
def _decision_attnames() -> tuple[str, ...]:
    """Each column's attname, in `_decision_columns`' order."""
    return tuple(column.attname for column in _decision_columns())


def _decision_new(values: dict[str, Any]) -> Decision:
    """Decision(**values) built positionally (what Django does for a row it reads): the keyword path of
    Model.__init__ costs a few times more, on every assessment. `values` names every column (attname)."""
    return Decision(None, *[values[attname] for attname in _decision_attnames()])


_JSON_COLUMNS = frozenset({"reasons", "signals"})


@functools.cache
def _decision_row_sql() -> str:
    """The decision's columns taken from its ONE parameter, a jsonb array of the values in
    `_decision_columns`' order (`_decision_row`): psycopg2 adapts each parameter through a few calls
    of its own, ~10,000 instructions apiece, so one array costs the client a seventeenth of the
    columns one by one; the server parses one value instead of seventeen. Text columns are assigned as
    text (so a value too long for its column is refused, as a parameter of its own would be), JSON
    columns as the array's elements, the others cast to their column's type (integers through numeric,
    so a fractional amount rounds as a parameter of its own did)."""
    parts = []
    for number, column in enumerate(_decision_columns()):
        if column.name in _JSON_COLUMNS:
            parts.append(f"j->{number}")
        elif column.get_internal_type() == "CharField":
            parts.append(f"j->>{number}")
        elif (db_type := column.db_type(connection)) in _INTEGER_TYPES:  # through numeric: 500.5 rounds
            parts.append(f"(j->>{number})::numeric::{db_type}")
        else:
            parts.append(f"(j->>{number})::{db_type}")
    return ", ".join(parts)


_INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})


@functools.cache
def _decision_at() -> int:
    return _decision_attnames().index("at")


def _decision_row(values: dict[str, Any]) -> str:
    """`_decision_row_sql`'s parameter: the values (`Assessment._values`) as one JSON array, the time as
    ISO 8601 text with its offset."""
    row = [values[attname] for attname in _decision_attnames()]
    at = _decision_at()
    row[at] = row[at].isoformat()
    return json.dumps(row)


@functools.cache
def _insert_members(name: str, hits: bool, seen: int) -> str:
    """The decision's rows as members of a `WITH` list, by shape: with the act's velocity hits or not,
    and with 0, 1 or 2 seen identities (device, network); `<name>` returns the decision's id. Built
    once per shape; only the parameters change. The decision's values are one parameter
    (`_decision_row_sql`); the hits and seen identities take the act's time and actor from the
    decision's row (fewer parameters to adapt)."""
    columns = _decision_columns()
    sql = (
        f"{name} AS (INSERT INTO risk_decision ({', '.join(column.column for column in columns)}) "  # noqa: S608
        f"SELECT {_decision_row_sql()} FROM (SELECT %s::jsonb AS j) AS {name}_row RETURNING id, actor, at)"
    )
    if hits:
        sql += (
            f", {name}_hits AS (INSERT INTO risk_velocityhit (key, member, weight, at) "  # noqa: S608 - names only
            f"SELECT k, m, w, {name}.at FROM {name}, unnest(%s::varchar[], %s::varchar[], %s::int[]) AS t (k, m, w))"
        )
    if seen:
        sql += (
            f", {name}_seen AS (INSERT INTO risk_seenidentity (actor, kind, value, first_seen, last_seen) "  # noqa: S608
            f"SELECT {name}.actor, t.k, t.v, {name}.at, {name}.at FROM {name}, "
            f"(VALUES {', '.join(['(%s, %s)'] * seen)}) AS t (k, v) "
            "ON CONFLICT (actor, kind, value) DO UPDATE SET last_seen = EXCLUDED.last_seen)"
        )
    return sql


@functools.cache
def _insert_sql(hits: bool, seen: int) -> str:
    """The decision's one statement on its own (`Assessment.store`)."""
    return f"WITH {_insert_members('d', hits, seen)} SELECT id FROM d"  # noqa: S608 - our tables, no input


def _insert_params(values: dict[str, Any], hits, seen) -> list:
    """The parameters of `_insert_members`: the decision's row (`_decision_row`), the hits, the seen
    identities."""
    params: list = [_decision_row(values)]
    if hits:  # as hit_rows makes them, without a model instance per hit
        params += [
            [key for key, _weight, _member in hits],
            [member or secrets.token_hex(8) for _key, _weight, member in hits],
            [weight for _key, weight, _member in hits],
        ]
    for kind, value in seen:
        params += [kind, value]
    return params


def _stored(decision: Decision, pk: int) -> None:
    decision.pk = pk
    decision._state.db = DEFAULT_DB_ALIAS
    decision._state.adding = False


# What a caller may still tell `AssessmentStarted.decide` once the read is sent: facts none of the read's
# parts depend on (those are the identities, the actor, the quantity: the velocity hits' weight).
DECIDE_FACTS = frozenset({"amount", "currency", "product_id", "merchant_id"})


@dataclass
class AssessmentStarted:
    """An act whose read is sent or ready to send (`assessment_start`), not decided yet.

    `read_sql()` is the SQL read as ONE scalar expression, for a caller that sends a statement anyway
    (the checkout's product read, escrow/checkout_sql.py); `decide(read=<its value>, amount=…)` then
    decides on it without a statement of its own. Without `read` the read is sent by `decide`. With
    Redis the exchange (hits, windows, the rules' version) is already sent: its reply is read by
    `decide`, so it overlaps whatever the caller sends in between. A caller that gives up between the
    two calls `abandon`."""

    event: str
    context: RiskContext
    now: datetime
    signals: Signals
    guess: Any  # the rules this process had when the read was built (risk/ruleset.py)
    hits: list
    frozen_actor: int | None
    redis: bool
    load: Load

    def read_sql(self) -> tuple[str, list] | None:
        """The read as ONE scalar SQL expression (a text[]) and its parameters; None: nothing to read
        by SQL (not PostgreSQL, or nothing asked)."""
        return self.load.sql_expression()

    def abandon(self) -> None:
        self.load.abandon()

    def decide(self, *, read: list[str] | None = None, **facts) -> "Assessment":
        """Decide the act: `read` is the value of `read_sql()` if the caller sent it; `facts` are the
        context's fields learnt since the start (`DECIDE_FACTS`: the amount, the product…)."""
        signals = self.signals
        if facts:
            if not facts.keys() <= DECIDE_FACTS:
                self.abandon()
                raise ValueError(f"the read already depends on {sorted(facts.keys() - DECIDE_FACTS)}")
            self.context = signals.context = self.context.replace(**facts)
        event, context, now = self.event, self.context, self.now
        version = signals.load_end(self.load, read)
        current = ruleset(version) if self.redis else self.guess
        if current is not self.guess:
            signals.load(current.signals.get(event, ()))

        outcome, deciding, reasons = Outcome.ALLOW, None, []
        frozen = bool(signals.frozen) if self.frozen_actor is not None else False
        blocked = None if frozen else blocklist_match(context=context, now=now, ruleset=current)
        if frozen:
            outcome = Outcome.FREEZE
            reasons = [{"rule": "account_frozen", "signal": "account_frozen", "value": 1, "threshold": 1}]
        elif blocked is not None:
            entry, value = blocked
            outcome = Outcome.BLOCK
            reasons = [
                {
                    "rule": f"block_list:{entry.pk}",
                    "signal": f"block_list.{entry.kind}",
                    "value": value,
                    "threshold": entry.value if entry.kind != "payout_account" else "…",
                    "reason": entry.reason,
                }
            ]
        else:
            # One pass over the compiled rules (ruleset.py), harshest first; a reason only for the one that decides.
            values = signals.values
            for signal, compare, threshold, rule in current.checks.get(event, ()):
                value = values[signal] if signal in values else signals.get(signal)
                if value is not None and compare(float(value), threshold):
                    outcome, deciding = rule.outcome, rule
                    reasons = [
                        {
                            "rule": rule.pk,
                            "signal": signal,
                            "value": value,
                            "threshold": rule.threshold,
                            "comparison": rule.comparison,
                            "description": rule.description,
                        }
                    ]
                    break
        return Assessment(
            event=event,
            context=context,
            now=now,
            signals=signals,
            outcome=outcome,
            deciding=deciding,
            reasons=reasons,
            frozen=frozen,
            first_hand=event not in SECOND_HAND,
            db_hits=[] if self.redis else self.hits,
        )


@functools.lru_cache(maxsize=64)
def _with_always(names: tuple[str, ...]) -> tuple[str, ...]:
    """A first-hand act's signals: the rules' (`Ruleset.signals`, the same tuple every time) and `ALWAYS`."""
    return tuple(dict.fromkeys((*names, *ALWAYS)))


def assessment_start(
    *,
    event: str,
    context: RiskContext,
    now: datetime,
    subject: tuple[str, int | str] | None = None,
    rate: RateAttempt | None = None,
) -> AssessmentStarted:
    """Start deciding one act: the rules and block list from this process's snapshot (risk/ruleset.py),
    the signals the event's active rules name (plus what every decision keeps) to read in ONE statement
    on PostgreSQL, built here and sent by the caller (`read_sql`) or by `decide`; with Redis, ONE
    command (a script) that also records the act's hits, sent here.

    `rate`: the request's rate-limit attempt (`core.ratelimit.RateAttempt`), counted by that same
    command before anything else (or here on its own without Redis); over its limit `decide` raises
    `RateLimited` and the act is neither recorded nor decided."""
    if event not in EVENTS:
        raise ValueError(f"unknown risk event {event!r}")
    subject_key = (subject[0], str(subject[1])) if subject else None
    signals = Signals(event=event, context=context, subject=subject_key, now=now)
    first_hand = event not in SECOND_HAND
    redis = uses_redis()
    # With Redis the rules' version is read in the same pipeline as the velocity windows, asked for the
    # rules this process has (nearly always the current ones); if the version moved, the fresh rules'
    # further signals are read after. Elsewhere the version is a local read.
    guess = ruleset_unchecked() if redis else ruleset()
    names = guess.signals.get(event, ()) if guess is not None else ()
    hits = _hits(signals, event, context) if first_hand else []
    frozen_actor = context.actor_id if context.actor_id is not None and event in FROZEN_EVENTS else None
    if first_hand:
        names = _with_always(names)
    load = signals.load_start(
        names, writes=hits, frozen_actor=frozen_actor, probe=version_key() if redis else None, rate=rate
    )
    return AssessmentStarted(
        event=event,
        context=context,
        now=now,
        signals=signals,
        guess=guess,
        hits=hits,
        frozen_actor=frozen_actor,
        redis=redis,
        load=load,
    )


def assessment_prepare(
    *, event: str, context: RiskContext, now: datetime, subject: tuple[str, int | str] | None = None
) -> Assessment:
    """Decide one act without storing it (`assessment_start`, its read sent at once). Call `store` on
    the result, whatever the outcome."""
    return assessment_start(event=event, context=context, now=now, subject=subject).decide()


def assess(
    *, event: str, context: RiskContext, subject: tuple[str, int | str] | None = None, now: datetime
) -> Decision:
    """Decide one act and store the decision with its reasons. Never raises for a risky act: the
    caller reads `decision.outcome` (or lets `decision_enforce` refuse it).

    On PostgreSQL: at most one read statement and one write (plus BEGIN/COMMIT around a freeze, which
    opens a review item); inside a caller's transaction both are its steps."""
    assessment = assessment_prepare(event=event, context=context, now=now, subject=subject)
    return assessment.store(subject=subject)
