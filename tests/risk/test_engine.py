"""The engine: each signal, each outcome, rule order and first match, the block list and its expiry,
the stored decision, and the velocity counters on Redis as well as in the database."""

from datetime import timedelta

import pytest
from django.db import DataError, transaction

import risk
from risk.blocklist import payout_digest
from risk.models import BlockEntry, Decision, ReviewItem, SeenIdentity
from risk.services import RiskRefused, decision_enforce
from risk.signals import Signals, signal_is_known, signal_names
from tests.conftest import requires_postgres
from tests.risk.conftest import rule

pytestmark = pytest.mark.django_db


def ctx(**fields) -> risk.RiskContext:
    base = {"email": "buyer@example.com", "ip": "203.0.113.7", "device": "dev-1", "amount": 1000, "quantity": 1}
    return risk.RiskContext(**{**base, **fields})


def assess(event="checkout", *, now, subject=None, **fields) -> Decision:
    return risk.assess(event=event, context=ctx(**fields), subject=subject, now=now)


# --- outcomes, order, first match ----------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["allow", "challenge", "review", "block", "freeze"])
def test_each_outcome_is_what_the_matching_rule_says(no_rules, now, outcome):
    matching = rule("checkout", "amount", "gte", 500, outcome)
    decision = assess(now=now)
    assert (decision.outcome, decision.rule_id) == (outcome, matching.pk)
    assert decision.reasons == [
        {
            "rule": matching.pk,
            "signal": "amount",
            "value": 1000.0,
            "threshold": 500.0,
            "comparison": "gte",
            "description": "",
        }
    ]


def test_nothing_matching_allows_with_no_reason(no_rules, now):
    rule("checkout", "amount", "gt", 5000, "block")
    decision = assess(now=now)
    assert (decision.outcome, decision.rule, decision.reasons) == ("allow", None, [])


def test_rules_run_block_then_review_then_challenge_then_allow_whatever_their_order(no_rules, now):
    allow = rule("checkout", "quantity", "gte", 1, "allow")
    challenge = rule("checkout", "quantity", "gte", 1, "challenge")
    review = rule("checkout", "quantity", "gte", 1, "review")
    assert assess(now=now).rule_id == review.pk
    block = rule("checkout", "quantity", "gte", 1, "block")
    assert assess(now=now).rule_id == block.pk
    block.delete()
    review.delete()
    assert assess(now=now).rule_id == challenge.pk
    challenge.delete()
    assert assess(now=now).rule_id == allow.pk


def test_first_match_wins_within_one_outcome_by_pk(no_rules, now):
    first = rule("checkout", "amount", "gte", 1, "review", description="first")
    rule("checkout", "quantity", "gte", 1, "review", description="second")
    assert assess(now=now).rule_id == first.pk


def test_inactive_rules_and_other_events_are_ignored(no_rules, now):
    rule("checkout", "amount", "gte", 1, "block", is_active=False)
    rule("login", "amount", "gte", 1, "block")
    assert assess(now=now).outcome == "allow"


@pytest.mark.parametrize(
    "comparison, threshold, matches",
    [("gte", 1000, True), ("gt", 1000, False), ("lte", 1000, True), ("lt", 1000, False), ("eq", 1000, True)],
)
def test_comparisons(no_rules, now, comparison, threshold, matches):
    rule("checkout", "amount", comparison, threshold, "review")
    assert (assess(now=now).outcome == "review") is matches


def test_the_compiled_comparisons_agree_with_rule_matches(no_rules):
    """The engine evaluates rules compiled once per snapshot (risk/ruleset.py); each comparison must say
    what `Rule.matches` says, at, around and away from the threshold, for ints, floats and None."""
    from risk.models import Rule
    from risk.ruleset import _check

    for comparison in ("gte", "gt", "lte", "lt", "eq"):
        for threshold in (0.0, 5.0, 2.5):
            checked = Rule(
                event="checkout", signal="amount", comparison=comparison, threshold=threshold, outcome="block"
            )
            signal, compare, limit, same = _check(checked)
            assert (signal, limit, same) == ("amount", threshold, checked)
            for value in (None, -1, 0, 2, 2.5, 2.5001, 4.9999, 5, 5.0, 6, 10**9):
                compiled = value is not None and compare(float(value), limit)
                assert compiled is checked.matches(value), (comparison, threshold, value)


def test_a_missing_signal_never_matches(no_rules, now):
    rule("checkout", "account_age_days", "lt", 1, "block")  # a guest has no account
    assert assess(now=now).outcome == "allow"


def test_the_decision_stores_event_score_subject_and_every_signal(no_rules, now):
    rule("checkout", "count.checkout.ip.1h", "gte", 100, "block")
    decision = assess(now=now, subject=("order", 7))
    stored = Decision.objects.get(pk=decision.pk)
    assert (stored.event, stored.subject_type, stored.subject_id) == ("checkout", "order", "7")
    assert stored.signals["count.checkout.ip.1h"] == 1
    assert {"amount", "quantity", "anomaly_score", "anomaly.amount_z", "new_device"} <= set(stored.signals)
    assert 0 <= stored.score <= 100


@pytest.mark.parametrize(
    "fields",
    [
        {"email": 'Zoë.O\'Brien+"q"@exämple.com', "ip": "2001:db8::7", "device": "dev\\1'\"é", "amount": None},
        {"email": "", "ip": "", "device": "", "amount": 1999, "currency": "CNY"},
    ],
)
def test_the_stored_row_is_every_value_the_engine_decided_whatever_its_text(no_rules, now, fields):
    """The decision's values travel as one JSON parameter: quotes, backslashes, non-ASCII text, IPv6,
    missing values and the time to the microsecond arrive as they were."""
    matching = rule("checkout", "quantity", "gte", 1, "review", description="Beträge über „500“")
    at = now.replace(microsecond=123456)
    decision = assess(now=at, subject=("order", 7), **fields)
    stored = Decision.objects.get(pk=decision.pk)
    assert stored.at == at
    assert (stored.event, stored.outcome, stored.rule_id) == ("checkout", "review", matching.pk)
    assert stored.challenge_passed is False
    assert (stored.subject_type, stored.subject_id) == ("order", "7")
    assert stored.email == fields["email"].lower()
    assert stored.actor == (f"email:{fields['email'].lower()}" if fields["email"] else "")
    assert (stored.ip, stored.device) == (fields["ip"] or None, fields["device"])
    assert stored.network == ("2001:db8::/48" if fields["ip"] else "")
    assert stored.amount == fields["amount"]
    assert stored.currency == fields.get("currency", "")
    assert stored.reasons == decision.reasons and stored.reasons[0]["description"] == "Beträge über „500“"
    assert stored.signals == decision.signals and stored.signals["quantity"] == 1


@requires_postgres  # SQLite keeps a varchar's text whatever its length
def test_a_value_too_long_for_its_column_is_refused_and_nothing_is_stored(no_rules, now):
    assessment = risk.assessment_prepare(event="checkout", context=ctx(currency="CNYX"), now=now)
    with pytest.raises(DataError), transaction.atomic():
        assessment.store(subject=("order", 7))
    assert not Decision.objects.exists()


def test_an_unknown_event_is_an_error(now):
    with pytest.raises(ValueError):
        risk.assess(event="teleport", context=ctx(), now=now)


# --- enforcing ----------------------------------------------------------------------------------------


def test_enforce_refuses_block_freeze_and_an_unanswered_challenge(no_rules, now):
    rule("checkout", "amount", "gte", 1, "challenge")
    challenged = assess(now=now)
    with pytest.raises(RiskRefused) as refused:
        decision_enforce(decision=challenged)
    assert (refused.value.code, refused.value.status, refused.value.extra) == (
        "challenge_required",
        403,
        {"decision": challenged.pk},
    )
    assert decision_enforce(decision=challenged, challenge_passed=True) == challenged
    rule("checkout", "amount", "gte", 1, "block")
    with pytest.raises(RiskRefused) as refused:
        decision_enforce(decision=assess(now=now), challenge_passed=True)
    assert refused.value.code == "risk_blocked"


def test_freeze_opens_a_review_item_and_keeps_the_account_from_buying(no_rules, now):
    rule("checkout", "amount", "gte", 5000, "freeze")
    assert assess(now=now, actor_id=42, amount=9000).outcome == "freeze"
    assert ReviewItem.objects.filter(kind="user", subject_id="42", status="open").count() == 1
    later = assess(now=now + timedelta(minutes=1), actor_id=42, amount=10)  # no rule matches this one
    assert (later.outcome, later.reasons[0]["rule"]) == ("freeze", "account_frozen")
    assert ReviewItem.objects.filter(kind="user", subject_id="42").count() == 1
    assert assess("login", now=now, actor_id=42, amount=10).outcome == "allow"  # may still sign in


# --- the block list ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, value, fields",
    [
        ("email", "buyer@example.com", {}),
        ("email", "*@example.com", {}),
        ("email", "*@*.example.net", {"email": "x@mail.example.net"}),
        ("ip", "203.0.113.7", {}),
        ("ip", "203.0.113.0/24", {}),
        ("ip", "2001:db8::/32", {"ip": "2001:db8::5"}),
        ("device", "dev-1", {}),
        ("payout_account", payout_digest("6222 0000 1111"), {"payout_account": "622200001111"}),
    ],
)
def test_the_block_list_blocks_before_any_rule(no_rules, now, kind, value, fields):
    rule("checkout", "amount", "gte", 1, "allow")
    entry = BlockEntry.objects.create(kind=kind, value=value, reason="chargebacks")
    decision = assess(now=now, **fields)
    assert decision.outcome == "block"
    assert decision.reasons[0]["rule"] == f"block_list:{entry.pk}"
    assert decision.rule is None


def test_a_block_list_entry_stops_at_its_expiry_and_others_do_not_match(no_rules, now):
    BlockEntry.objects.create(kind="email", value="buyer@example.com", reason="x", expires_at=now + timedelta(hours=1))
    BlockEntry.objects.create(kind="ip", value="198.51.100.0/24", reason="x")
    BlockEntry.objects.create(kind="email", value="*@other.example", reason="x")
    assert assess(now=now).outcome == "block"
    assert assess(now=now + timedelta(hours=2)).outcome == "allow"


# --- signals -----------------------------------------------------------------------------------------


def signals_of(event="checkout", *, now, subject=None, **fields) -> Signals:
    return Signals(event=event, context=ctx(**fields), subject=subject, now=now)


@pytest.mark.parametrize(
    "dimension, field, other",
    [
        ("account", "actor_id", 2),
        ("email", "email", "b@example.com"),
        ("ip", "ip", "198.51.100.1"),
        ("network", "ip", "198.51.101.1"),
        ("device", "device", "dev-2"),
    ],
)
def test_velocity_counts_per_identity_in_its_window_never_shop_wide(no_rules, now, dimension, field, other):
    same = {"actor_id": 1} if field != "actor_id" else {}
    for minutes in (0, 5, 30):
        assess(
            now=now - timedelta(minutes=minutes), **{field: 1 if field == "actor_id" else ctx().__dict__[field]}, **same
        )
    assess(now=now, **{field: other}, **same)  # someone else: not counted for this identity
    values = signals_of(now=now, **{field: 1 if field == "actor_id" else ctx().__dict__[field]}, **same)
    assert values.get(f"count.checkout.{dimension}.10m") == 2
    assert values.get(f"count.checkout.{dimension}.1h") == 3


def test_keys_sum_quantities_and_emails_count_distinct_addresses(no_rules, now):
    for email, quantity in (("a@example.com", 5), ("b@example.com", 7), ("a@example.com", 1)):
        assess(now=now, email=email, quantity=quantity)
    values = signals_of(now=now, email="a@example.com")
    assert values.get("keys.checkout.email.1h") == 6
    assert values.get("keys.checkout.device.1h") == 13
    assert values.get("emails.device.1d") == 2
    assert values.get("emails.ip.1h") == 2


def test_signups_per_ip_and_network_per_hour(no_rules, now):
    for n in range(3):
        risk.assess(event="signup", context=risk.RiskContext(email=f"s{n}@example.com", ip=f"198.51.100.{n}"), now=now)
    values = Signals(event="signup", context=risk.RiskContext(ip="198.51.100.0"), subject=None, now=now)
    assert values.get("count.signup.ip.1h") == 1
    assert values.get("count.signup.network.1h") == 3


def test_failed_payments_count_against_the_checkout_device(no_rules, now):
    decision = assess(now=now)
    risk.decision_subject_set(decision=decision, subject=("order", 99))
    risk.outcome_note(counter="payment_failed", subject=("order", 99), now=now)
    risk.outcome_note(counter="payment_failed", subject=("order", 99), now=now)
    assert signals_of(now=now).get("count.payment_failed.device.1h") == 2
    assert signals_of(now=now, device="dev-other").get("count.payment_failed.device.1h") == 0


def test_account_age_amount_quantity_security_change(no_rules, now):
    values = signals_of(
        now=now, actor_id=1, actor_created_at=now - timedelta(days=3), security_changed_at=now - timedelta(hours=2)
    )
    assert values.get("account_age_days") == pytest.approx(3)
    assert values.get("hours_since_security_change") == pytest.approx(2)
    assert (values.get("amount"), values.get("quantity")) == (1000, 1)


def test_new_device_and_network_only_against_an_established_history(no_rules, now):
    # Never seen before: nothing to compare with (account age covers brand-new actors).
    assert signals_of("login", now=now, actor_id=5).get("new_device") == 0
    assess("login", now=now - timedelta(days=5), actor_id=5)
    assert SeenIdentity.objects.filter(actor="user:5").count() == 2
    same = signals_of("withdrawal", now=now, actor_id=5)
    assert (same.get("new_device"), same.get("new_network")) == (0, 0)
    moved = signals_of("withdrawal", now=now, actor_id=5, device="dev-9", ip="192.0.2.10")
    assert (moved.get("new_device"), moved.get("new_network")) == (1, 1)


def test_a_guests_devices_and_networks_are_those_of_their_earlier_checkouts_and_no_row_is_written(no_rules, now):
    """A guest is an e-mail address typed at a checkout: what they used before is read from their own
    decisions, not remembered in rows of its own (a write on every guest checkout)."""
    guest = {"email": "Guest@Example.com"}
    first = assess(now=now, **guest)
    assert (first.signals["new_device"], first.signals["new_network"]) == (0, 0)  # nothing to compare with
    assess(now=now + timedelta(hours=1), **guest, device="dev-2", ip="192.0.2.10")  # not a day old yet
    later = now + timedelta(days=2)
    same = signals_of(now=later, **guest)
    assert (same.get("new_device"), same.get("new_network"), same.get("anomaly.new_network")) == (0, 0, 0)
    also_used = signals_of(now=later, **guest, device="dev-2", ip="192.0.2.10")
    assert (also_used.get("new_device"), also_used.get("new_network")) == (0, 0)  # first used two days ago
    moved = signals_of(now=later, **guest, device="dev-9", ip="198.51.100.10")
    assert (moved.get("new_device"), moved.get("new_network"), moved.get("anomaly.new_network")) == (1, 1, 1)
    someone_else = signals_of(now=later, email="other@example.com", device="dev-9", ip="198.51.100.10")
    assert (someone_else.get("new_device"), someone_else.get("new_network")) == (0, 0)
    assert not SeenIdentity.objects.exists()
    assess("checkout", now=later, actor_id=5)  # an account's are remembered
    assert SeenIdentity.objects.filter(actor="user:5").count() == 2


def test_an_identity_used_within_the_hour_is_not_written_again_and_one_used_earlier_is_touched(no_rules, now):
    """A returning actor's every act would rewrite the rows of their device and network: those the
    memory holds as used in the last hour are left as they are; older ones get their `last_seen`."""
    from django.db import connection

    from risk.signals import TOUCH_SECONDS

    device, network, other = ("device", "dev-1"), ("network", "203.0.113.0/24"), ("device", "dev-2")

    def last_seen():
        rows = SeenIdentity.objects.filter(actor="user:5").values_list("kind", "value", "last_seen")
        return {(kind, value): at for kind, value, at in rows}

    def versions():  # a row written again gets a new version (xmin), whatever it holds
        with connection.cursor() as cursor:
            cursor.execute("SELECT kind, value, xmin::text FROM risk_seenidentity WHERE actor = 'user:5'")
            return {(kind, value): version for kind, value, version in cursor.fetchall()}

    first = now - timedelta(days=3)
    assess("login", now=first, actor_id=5)
    before = versions()
    assess("checkout", now=first + timedelta(seconds=TOUCH_SECONDS - 60), actor_id=5)
    assert versions() == before and last_seen() == {device: first, network: first}
    moved = first + timedelta(seconds=TOUCH_SECONDS - 30)
    assess("checkout", now=moved, actor_id=5, device="dev-2")  # a device new to them is remembered at once
    assert last_seen() == {device: first, network: first, other: moved}
    later = first + timedelta(seconds=TOUCH_SECONDS + 60)
    decision = assess("checkout", now=later, actor_id=5)
    assert last_seen() == {device: later, network: later, other: moved}
    assert (decision.signals["new_device"], decision.signals["new_network"]) == (0, 0)


def test_the_anomaly_score_is_explained_by_its_parts(no_rules, now):
    start = now - timedelta(days=20)
    for day in range(12):  # a buyer who spends about 10.00 around the same hour
        assess(now=start + timedelta(days=day), actor_id=8, amount=1000 + day)
    usual = signals_of(now=start + timedelta(days=13), actor_id=8, amount=1005)
    assert usual.get("anomaly_score") == 0
    odd_time = start + timedelta(days=13, hours=12)
    odd = signals_of(now=odd_time, actor_id=8, amount=50000, device="dev-new", ip="192.0.2.50")
    parts = {name: odd.get(name) for name in ("anomaly.amount_z", "anomaly.unusual_hour", "anomaly.new_network")}
    assert parts["anomaly.amount_z"] > 4 and parts["anomaly.unusual_hour"] == 1 and parts["anomaly.new_network"] == 1
    assert odd.get("anomaly_score") == 80


def test_burst_counts_the_actors_acts_of_the_last_ten_minutes(no_rules, now):
    for seconds in (10, 20, 30, 40):
        assess(now=now - timedelta(seconds=seconds), actor_id=3)
    assert signals_of(now=now, actor_id=3).get("anomaly.burst") == 4


def test_merchant_rates_need_enough_orders(no_rules, now):
    few = Signals(
        event="dispute",
        context=risk.RiskContext(extra={"merchant_orders_30d": 9, "merchant_used_disputes_30d": 5}),
        subject=None,
        now=now,
    )
    assert few.get("merchant_used_dispute_rate") is None
    many = Signals(
        event="dispute",
        context=risk.RiskContext(extra={"merchant_orders_30d": 10, "merchant_used_disputes_30d": 3}),
        subject=None,
        now=now,
    )
    assert many.get("merchant_used_dispute_rate") == 30


def test_every_listed_signal_is_known_and_computable(no_rules, now):
    values = signals_of(now=now, actor_id=1)
    names = signal_names()
    assert all(signal_is_known(name) for name in names)
    values.prefetch(names)
    assert set(names) <= set(values.values)
    assert not signal_is_known("count.checkout.shop.1h")  # never shop-wide
    assert not signal_is_known("count.checkout.product.1h")  # never product-wide


# --- Redis ---------------------------------------------------------------------------------------------


def test_velocity_on_redis_counts_weights_distinct_and_slides(no_rules, now, redis_cache):
    from risk.models import VelocityHit

    for minutes, email, quantity in ((0, "a@example.com", 2), (5, "b@example.com", 3), (70, "c@example.com", 4)):
        assess(now=now - timedelta(minutes=minutes), email=email, quantity=quantity)
    values = signals_of(now=now)
    assert values.get("count.checkout.device.10m") == 2
    assert values.get("count.checkout.device.1d") == 3
    assert values.get("keys.checkout.device.1h") == 5
    assert values.get("emails.device.1d") == 3
    assert values.get("emails.device.1h") == 2
    assert VelocityHit.objects.count() == 0  # nothing in the database


def test_each_thread_keeps_one_exchange_connection_and_a_connection_redis_dropped_is_made_again(
    no_rules, now, redis_cache
):
    """The exchanges of a thread share the connection it keeps (no pool get or release per act); one
    the server closed (a restart, a timeout) answers the next act's command with its end, and the
    command goes again on the connection made anew: that act is counted, once."""
    from django.core.cache import cache

    from risk.velocity import _redis_held

    rule("checkout", "count.checkout.email.10m", "gte", 1000, "block")
    assert assess(now=now).signals["count.checkout.email.10m"] == 1
    kept = _redis_held().connection
    assert assess(now=now).signals["count.checkout.email.10m"] == 2
    assert _redis_held().connection is kept and not _redis_held().busy
    cache._cache.get_client(write=True).client_kill_filter(_type="normal", skipme=True)
    assert assess(now=now).signals["count.checkout.email.10m"] == 3
    assert _redis_held().connection is kept and not _redis_held().busy


class _SocketEnd:
    """What `risk.velocity._reply` reads from: one end of a real socket pair, with redis-py's own
    buffer and error parser, as a redis-py connection holds them."""

    def __init__(self, sock):
        from redis._parsers import _RESP3Parser
        from redis._parsers.socket import SocketBuffer

        self._sock = sock
        self._parser = _RESP3Parser(socket_read_size=65536)
        self._parser._buffer = SocketBuffer(sock, 65536, None)
        self.disconnected = False

    def disconnect(self):
        self.disconnected = True
        self._sock.close()


@pytest.mark.parametrize(
    "chunks",
    [[b"$11\r\nhelloworld!\r\n"], [b"$11\r\nhello", b"world!\r\n"], [b"$1", b"1\r\nhelloworld!", b"\r\n"]],
)
def test_the_exchanges_reply_is_read_whole_however_the_socket_splits_it(chunks):
    import socket
    import threading
    import time

    from risk.velocity import _reply

    ours, theirs = socket.socketpair()

    def answer():
        for chunk in chunks:
            theirs.sendall(chunk)
            time.sleep(0.01)

    threading.Thread(target=answer).start()
    end = _SocketEnd(ours)
    assert _reply(end) == b"helloworld!"
    assert not end.disconnected
    theirs.close()


def test_an_error_reply_raises_as_redis_py_would_and_a_reply_cut_short_drops_the_connection():
    import socket

    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import InvalidResponse, NoScriptError

    from risk.velocity import _reply

    ours, theirs = socket.socketpair()
    end = _SocketEnd(ours)
    theirs.sendall(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
    with pytest.raises(NoScriptError):
        _reply(end)
    assert not end.disconnected  # an answer: the connection is fine
    theirs.sendall(b":1\r\n")  # not a bulk string: dropped, and raised as no connection error (not sent again)
    with pytest.raises(InvalidResponse):
        _reply(end)
    assert end.disconnected
    ours, theirs = socket.socketpair()
    end = _SocketEnd(ours)
    theirs.sendall(b"$5\r\nab")
    theirs.close()
    with pytest.raises(RedisConnectionError):
        _reply(end)
    assert end.disconnected


def test_an_exchange_sent_while_the_threads_is_in_flight_takes_its_own_connection(no_rules, now, redis_cache):
    from risk.velocity import RedisExchange, _redis_held, counter_key

    key = counter_key("v", "checkout", "email", "buyer@example.com")
    first = RedisExchange(now=now, writes=[(key, 2, None)], asks=[("weight", key, 600)])
    second = RedisExchange(now=now, writes=[(key, 3, None)], asks=[("weight", key, 600), ("count", key, 600)])
    assert first.connection is _redis_held().connection and second.connection is not first.connection
    assert first.receive() == ([2], None)
    assert second.receive() == ([5, 2], None)
    assert not _redis_held().busy
    third = RedisExchange(now=now, writes=[], asks=[("count", key, 600)])
    assert third.connection is _redis_held().connection
    assert third.receive() == ([2], None)


def test_a_set_is_trimmed_past_the_longest_window_by_one_act_in_trim_every_and_never_counts_what_is_past(
    no_rules, now, redis_cache, monkeypatch
):
    import itertools

    from django.core.cache import cache

    from risk import velocity
    from risk.velocity import LONGEST, TRIM_EVERY, RedisExchange, counter_key

    redis = cache._cache.get_client(write=True)
    key = counter_key("v", "checkout", "email", "buyer@example.com")
    past = now - timedelta(seconds=LONGEST + 60)
    redis.zadd(key, {"old:5": past.timestamp()})
    monkeypatch.setattr(velocity, "_acts", itertools.count(1))
    for _act in range(1, TRIM_EVERY):  # none of these trims; the old hit is kept but never counted
        answers, _version = RedisExchange(now=now, writes=[(key, 1, None)], asks=[("weight", key, LONGEST)]).receive()
    assert answers == [TRIM_EVERY - 1]
    assert redis.zcard(key) == TRIM_EVERY  # the old hit and this run's
    answers, _version = RedisExchange(now=now, writes=[(key, 1, None)], asks=[("count", key, LONGEST)]).receive()
    assert answers == [TRIM_EVERY]
    assert redis.zcard(key) == TRIM_EVERY and redis.zscore(key, "old:5") is None  # trimmed by the 16th
    assert 0 < redis.ttl(key) <= LONGEST


def test_hits_of_two_processes_never_share_a_member(no_rules, now, redis_cache):
    """A forked worker starts with its parent's act count: its token is its own, so the two processes'
    hits on one set stay two members."""
    import os

    from django.core.cache import cache

    from risk.velocity import RedisExchange, counter_key

    key = counter_key("v", "checkout", "email", "buyer@example.com")
    RedisExchange(now=now, writes=[(key, 1, None)], asks=[]).receive()
    cache._cache.get_client(write=True).connection_pool.disconnect()
    child = os.fork()
    if child == 0:  # the child: one act as the next number of the parent's count, then leave at once
        from risk import velocity

        velocity._local.__dict__.clear()
        try:
            RedisExchange(now=now, writes=[(key, 1, None)], asks=[]).receive()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    from risk import velocity

    velocity._local.__dict__.clear()
    RedisExchange(now=now, writes=[(key, 1, None)], asks=[]).receive()
    assert cache._cache.get_client(write=True).zcard(key) == 3


def test_a_context_copy_with_changes_is_what_dataclasses_replace_gives():
    import dataclasses

    context = ctx(actor_id=3, extra={"revealed": 1}, count_as=("dispute_revealed",))
    assert context.replace(amount=5, currency="CNY") == dataclasses.replace(context, amount=5, currency="CNY")
    assert context.amount == 1000  # the original is unchanged
    with pytest.raises(TypeError):
        context.replace(amout=5)


def test_the_exchange_command_is_packed_as_redis_py_packs_it():
    """The EVALSHA is packed by hand (risk.velocity._command): byte for byte what redis-py sends, for
    ASCII arguments and for a key with other characters (a cache KEY_PREFIX may have them)."""
    import redis

    from risk.velocity import _command

    packer = redis.Connection()
    for parts in (
        ["EVALSHA", "a" * 40, "2", "risk:ruleset:version", "risk:v:checkout:ip:0123abcd", "1764504000.5", "2592000"],
        ["EVALSHA", "b" * 40, "1", "shöp:1:risk:ruleset:version", "", "0"],
    ):
        assert _command(parts) == b"".join(packer.pack_command(*parts))


# --- housekeeping ----------------------------------------------------------------------------------------


def test_the_beat_prunes_database_hits_past_the_longest_window(no_rules, now):
    import time_machine

    from config.celery import app
    from risk.models import VelocityHit
    from risk.tasks import velocity_prune_task

    assert app.conf.beat_schedule["risk.velocity_prune"]["task"] == velocity_prune_task.name
    assess(now=now - timedelta(days=31))
    assess(now=now - timedelta(days=29))
    old, recent = (
        VelocityHit.objects.filter(at__lt=now - timedelta(days=30)),
        VelocityHit.objects.filter(at__gte=now - timedelta(days=30)),
    )
    assert old.exists() and recent.exists()
    kept = recent.count()
    with time_machine.travel(now):
        assert velocity_prune_task.delay().get() > 0
    assert not old.exists() and recent.count() == kept
