"""The checkout's assessment inside the order's own transaction, and the rules and block list cached per
process behind a version key: cheap on the purchase path, with every decision still stored."""

import contextlib
import dataclasses

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

import risk
from escrow import services
from escrow.models import Order
from risk.models import BlockEntry, Decision, ReviewItem, Rule, SeenIdentity, VelocityHit
from risk.ruleset import VERSION_KEY
from risk.services import RiskRefused
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres
from tests.risk.conftest import rule

pytestmark = pytest.mark.django_db


@contextlib.contextmanager
def redis_commands():
    """The commands this process sends to Redis inside the block, as packed bytes, one per send."""
    import redis as redis_library

    calls: list[bytes] = []
    connection_class = redis_library.connection.AbstractConnection
    original = connection_class.send_packed_command

    def counted(self, command, *args, **kwargs):
        calls.append(command if isinstance(command, bytes) else b"".join(command))
        return original(self, command, *args, **kwargs)

    connection_class.send_packed_command = counted
    try:
        yield calls
    finally:
        connection_class.send_packed_command = original


def place(product, *, now, quantity=1, email="buyer@example.com", challenge_passed=False):
    return services.order_place_assessed(
        risk_context=risk.RiskContext(email=email, ip="203.0.113.7", device="dev-1"),
        challenge_passed=challenge_passed,
        product_pk=product.pk,
        quantity=quantity,
        email=email,
        buyer=None,
        now=now,
        ip="203.0.113.7",
    )


def test_a_placed_checkout_stores_its_decision_naming_the_order(no_rules, now):
    rule("checkout", "amount", "gte", 1, "challenge")
    product = factories.product_create(stock=3, price=500)
    placed = place(product, now=now, quantity=2, challenge_passed=True)
    decision = Decision.objects.get()
    assert (decision.subject_type, decision.subject_id) == ("order", str(placed.order.pk))
    assert (decision.outcome, decision.challenge_passed, decision.amount, decision.currency) == (
        "challenge",
        True,
        1000,
        product.currency,
    )
    assert decision.signals["quantity"] == 2


def test_a_checkout_refused_by_risk_places_nothing_and_keeps_its_decision(no_rules, now):
    rule("checkout", "amount", "gte", 1, "block", description="too much")
    product = factories.product_create(stock=3, price=500)
    with pytest.raises(RiskRefused) as refused:
        place(product, now=now)
    assert refused.value.code == "risk_blocked"
    decision = Decision.objects.get(pk=refused.value.decision_pk)
    assert (decision.outcome, decision.subject_type, decision.amount) == ("block", "", 500)
    assert decision.reasons[0]["description"] == "too much"
    assert not Order.objects.exists()
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 3
    assert VelocityHit.objects.filter(key__startswith="risk:v:checkout:email:").count() == 1  # counted


def test_an_unanswered_challenge_is_refused_and_stored(no_rules, now):
    rule("checkout", "amount", "gte", 1, "challenge")
    product = factories.product_create(stock=3, price=500)
    with pytest.raises(RiskRefused) as refused:
        place(product, now=now)
    assert refused.value.code == "challenge_required"
    assert Decision.objects.get(pk=refused.value.decision_pk).outcome == "challenge"
    assert not Order.objects.exists()


def test_a_checkout_refused_for_stock_keeps_its_decision_and_still_counts(no_rules, now):
    """The order's transaction rolls back, the decision and the act's velocity hits are stored after."""
    rule("checkout", "count.checkout.email.10m", "gte", 1000, "block")  # computed and kept, never matching
    product = factories.product_create(stock=1, price=500)
    for attempt in (1, 2):
        with pytest.raises(services.CheckoutError) as refused:
            place(product, now=now, quantity=2)
        assert refused.value.code == "out_of_stock"
        latest = Decision.objects.order_by("-pk").first()
        assert (latest.outcome, latest.subject_type) == ("allow", "")
        assert latest.signals["count.checkout.email.10m"] == attempt
    assert Decision.objects.count() == 2 and not Order.objects.exists()


def test_an_address_too_long_to_store_is_refused_and_its_decision_kept(no_rules, now):
    """The order refuses it (bad_email); the decision names its actor by a hash of the address."""
    product = factories.product_create(stock=1, price=500)
    long_email = "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com"
    with pytest.raises(services.CheckoutError) as refused:
        place(product, now=now, email=long_email)
    assert refused.value.code == "bad_email"
    decision = Decision.objects.get()
    assert decision.actor.startswith("email:sha256:") and len(decision.actor) <= 300


def test_a_product_not_for_sale_is_still_assessed(no_rules, now):
    rule("checkout", "amount", "gte", 1, "block")
    with pytest.raises(services.CheckoutError):
        services.order_place_assessed(
            risk_context=risk.RiskContext(email="buyer@example.com"),
            product_pk=999_999,
            quantity=1,
            email="buyer@example.com",
            buyer=None,
            now=now,
        )
    decision = Decision.objects.get()
    assert (decision.outcome, decision.amount, decision.signals["quantity"]) == ("allow", None, 1)


# --- the rules and the block list, cached per process ---------------------------------------------------


def test_a_rule_saved_or_deleted_is_seen_by_the_next_assessment(no_rules, now):
    assert risk.assess(event="checkout", context=risk.RiskContext(amount=100), now=now).outcome == "allow"
    blocking = rule("checkout", "amount", "gte", 1, "block")
    assert risk.assess(event="checkout", context=risk.RiskContext(amount=100), now=now).outcome == "block"
    blocking.delete()
    assert risk.assess(event="checkout", context=risk.RiskContext(amount=100), now=now).outcome == "allow"
    entry = BlockEntry.objects.create(kind="ip", value="203.0.113.0/24", reason="abuse")
    assert risk.assess(event="checkout", context=risk.RiskContext(ip="203.0.113.9"), now=now).outcome == "block"
    entry.expires_at = now
    entry.save()
    assert risk.assess(event="checkout", context=risk.RiskContext(ip="203.0.113.9"), now=now).outcome == "allow"


def test_the_snapshot_is_reused_until_another_process_bumps_the_version(no_rules, now):
    """A change this process did not see through the ORM (another machine's, or a bulk insert) is
    picked up when the shared version key changes."""
    context = risk.RiskContext(amount=100)
    assert risk.assess(event="checkout", context=context, now=now).outcome == "allow"
    Rule.objects.bulk_create([Rule(event="checkout", signal="amount", comparison="gte", threshold=1, outcome="block")])
    assert risk.assess(event="checkout", context=context, now=now).outcome == "allow"  # the snapshot
    cache.set(VERSION_KEY, "bumped elsewhere", timeout=None)
    assert risk.assess(event="checkout", context=context, now=now).outcome == "block"


@requires_postgres
def test_an_assessment_is_one_read_and_one_write_whatever_the_rules(no_rules, now):
    """50 rules on velocity, history and seen identities: the rules come from the snapshot, the
    signals from ONE statement, the decision (with hits and seen identities) goes in ONE."""
    signals = ["count.checkout.device.10m", "keys.checkout.email.1h", "emails.ip.1h", "count.payment_failed.ip.1h"]
    for number in range(50):
        rule("checkout", signals[number % 4], "gte", 10_000 + number, ["block", "review", "challenge"][number % 3])
    context = risk.RiskContext(actor_id=7, email="b@example.com", ip="203.0.113.7", device="dev-1", amount=100)
    risk.assess(event="checkout", context=context, now=now)  # loads the snapshot
    with CaptureQueriesContext(connection) as captured:
        decision = risk.assess(event="checkout", context=context, now=now)
    assert len(captured) == 2, [query["sql"][:120] for query in captured]
    assert decision.signals["count.checkout.device.10m"] == 2
    assert decision.signals["emails.ip.1h"] == 1
    assert Decision.objects.get(pk=decision.pk).signals == decision.signals


def test_with_redis_one_command_reads_the_version_and_the_windows_and_a_bump_elsewhere_is_seen(
    no_rules, now, redis_cache
):
    """One Redis round trip per assessment (a script: the version, the hits, the windows); a bump by
    another process (straight into Redis) reloads the rules at the next assessment."""
    from risk.ruleset import version_key

    context = risk.RiskContext(email="b@example.com", ip="203.0.113.7", amount=100)
    assert risk.assess(event="checkout", context=context, now=now).outcome == "allow"
    Rule.objects.bulk_create([Rule(event="checkout", signal="amount", comparison="gte", threshold=1, outcome="block")])
    with redis_commands() as calls:
        decision = risk.assess(event="checkout", context=context, now=now)
    assert decision.outcome == "allow"  # the snapshot
    assert len(calls) == 1 and b"EVALSHA" in calls[0], calls
    cache._cache.get_client(write=True).set(version_key(), b"bumped by another machine")
    assert risk.assess(event="checkout", context=context, now=now).outcome == "block"


@requires_postgres  # the error is injected into the PostgreSQL read that the Redis reply waits behind
def test_with_redis_a_lost_script_is_loaded_again_and_an_error_between_send_and_reply_leaves_no_stray_reply(
    no_rules, now, redis_cache, monkeypatch
):
    """The script's reply is read after the SQL read: a Redis that lost its scripts (restarted) gets it
    again, and an SQL error in between drops that connection, so no later command reads the reply."""
    from risk.signals import Signals

    rule("checkout", "count.checkout.email.10m", "gte", 1000, "block")
    context = risk.RiskContext(email="b@example.com", ip="203.0.113.7", amount=100)
    assert risk.assess(event="checkout", context=context, now=now).signals["count.checkout.email.10m"] == 1
    cache._cache.get_client(write=True).script_flush()
    assert risk.assess(event="checkout", context=context, now=now).signals["count.checkout.email.10m"] == 2

    def broken(self, **kwargs):
        raise RuntimeError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(Signals, "_read_postgres", broken)
        with pytest.raises(RuntimeError):
            risk.assess(event="checkout", context=context, now=now)
    # The failed act's hits were recorded (Redis is not transactional); the next answers are its own.
    assert cache.get("anything") is None
    assert risk.assess(event="checkout", context=context, now=now).signals["count.checkout.email.10m"] == 4


# --- the checkout's read and write inside escrow's statements ------------------------------------------


def _stored_act(decision_pk: int) -> dict:
    """Everything the act stored: the decision's columns but its id, its velocity hits (a plain hit's
    member is a random token: left out) and the actor's seen identities."""
    decision = Decision.objects.filter(pk=decision_pk).values().get()
    decision.pop("id")
    hits = sorted(
        (hit.key, hit.weight, hit.at, hit.member if hit.key.startswith("risk:e:") else "")
        for hit in VelocityHit.objects.filter(at=decision["at"])
    )
    seen = sorted(
        SeenIdentity.objects.filter(actor=decision["actor"]).values_list("kind", "value", "first_seen", "last_seen")
    )
    return {"decision": decision, "hits": hits, "seen": seen}


@requires_postgres
def test_the_checkout_stores_in_its_own_statements_what_assess_stores(no_rules, now):
    """The checkout reads the risk engine's signals in its product read and writes the decision in its
    order's statement: the decision, hits and seen identities are the ones `assess` stores for the same
    act (the act's rows are deleted between the two, so the second sees what the first saw)."""
    from datetime import timedelta

    rule("checkout", "count.checkout.device.10m", "gte", 10_000, "block")
    rule("checkout", "keys.checkout.email.1h", "gte", 2, "review", description="a second key within the hour")
    rule("checkout", "emails.device.1d", "gte", 10_000, "challenge")
    product = factories.product_create(stock=5, price=700)
    email, ip, device = "history@example.com", "203.0.113.7", "dev-7"
    context = risk.RiskContext(actor_id=4242, email=email, ip=ip, device=device)
    # A history: acts of this actor over the last days, from this device and an older network.
    for hours in (50, 30, 20, 5, 2, 0.5):
        earlier = dataclasses.replace(context, ip="198.51.100.9" if hours > 24 else ip, amount=500 + hours)
        risk.assess(event="checkout", context=earlier, now=now - timedelta(hours=hours))
    placed = services.order_place_assessed(
        risk_context=context, product_pk=product.pk, quantity=1, email=email, buyer=None, now=now, ip=ip
    )
    folded = Decision.objects.get(subject_type="order", subject_id=str(placed.order.pk))
    assert folded.outcome == "review" and folded.reasons[0]["description"] == "a second key within the hour"
    assert (folded.signals["new_device"], folded.signals["new_network"], folded.signals["anomaly.burst"]) == (0, 1, 0)
    stored = _stored_act(folded.pk)

    Decision.objects.filter(pk=folded.pk).delete()
    VelocityHit.objects.filter(at=now).delete()
    SeenIdentity.objects.filter(actor=folded.actor, first_seen=now).delete()
    SeenIdentity.objects.filter(actor=folded.actor, last_seen=now).update(last_seen=now - timedelta(hours=1))
    full = dataclasses.replace(
        context,
        quantity=1,
        amount=700,
        currency=product.currency,
        product_id=product.pk,
        merchant_id=product.merchant_id,
    )
    assessed = risk.assess(event="checkout", context=full, subject=("order", placed.order.pk), now=now)
    assert _stored_act(assessed.pk) == stored


def test_with_redis_a_product_not_for_sale_reads_the_exchange_sent_before_the_product_read(no_rules, now, redis_cache):
    """The exchange goes out before the product is read; a product not for sale still has its reply
    read (the act counted once) and its decision stored, and nothing is left for the next command."""
    rule("checkout", "count.checkout.email.10m", "gte", 1000, "block")
    for attempt in (1, 2):
        with pytest.raises(services.CheckoutError):
            services.order_place_assessed(
                risk_context=risk.RiskContext(email="buyer@example.com", ip="203.0.113.7"),
                product_pk=999_999,
                quantity=1,
                email="buyer@example.com",
                buyer=None,
                now=now,
            )
        assert Decision.objects.order_by("-pk").first().signals["count.checkout.email.10m"] == attempt
    assert cache.get("anything") is None


@requires_postgres
def test_the_payment_webhook_stores_in_its_own_statements_what_assess_stores(no_rules, now, run_on_commit):
    """The webhook reads the checkout's decisions in its lock statement and writes the `payment` decision
    in the statement that marks the order paid: the same row `assess` stores for the same act."""
    rule("checkout", "amount", "gte", 1, "review", description="look at every checkout")
    rule("payment", "subject_flagged", "gte", 1, "review", description="the checkout was held")
    product = factories.product_create(stock=3, price=500)
    placed = place(product, now=now)
    with run_on_commit():
        assert factories.pay(placed.order).status_code == 200
    assert Order.objects.get(pk=placed.order.pk).status == "held_for_review"
    folded = Decision.objects.get(event="payment")
    assert (folded.outcome, folded.subject_id, folded.signals) == (
        "review",
        str(placed.order.pk),
        {"subject_flagged": 1},
    )
    stored = Decision.objects.filter(pk=folded.pk).values().get()

    ReviewItem.objects.filter(decision=folded).delete()
    Decision.objects.filter(pk=folded.pk).delete()
    order = placed.order
    context = risk.subject_context(
        ("order", order.pk),
        amount=order.amount,
        currency=order.currency,
        quantity=order.quantity,
        product_id=order.product_id,
        merchant_id=order.merchant_id,
    )
    assessed = risk.assess(event="payment", context=context, subject=("order", order.pk), now=stored["at"])
    again = Decision.objects.filter(pk=assessed.pk).values().get()
    assert {**again, "id": None} == {**stored, "id": None}


# --- the checkout's rate limit, counted by the engine's Redis command --------------------------------


def _api_checkout(client, product, *, email="buyer@example.com"):
    return client.post(
        "/api/v1/orders/", {"product": product.pk, "quantity": 1, "email": email}, content_type="application/json"
    )


def test_with_redis_an_api_checkout_is_one_redis_command_and_its_rate_limit_still_holds(
    no_rules, redis_cache, settings
):
    """The API checkout's rate limit rides in the risk engine's script: one round trip to Redis per
    checkout, not one for the limit and one for the engine. Over the limit: 429 with Retry-After, no
    order, no decision, and the act's velocity hits not recorded."""
    from django.test import Client

    from risk.velocity import counter_key

    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "3/min"}
    product = factories.product_create(stock=10)
    client = Client(REMOTE_ADDR="203.0.113.7")
    assert _api_checkout(Client(REMOTE_ADDR="198.51.100.4"), product).status_code == 201  # connections made
    with redis_commands() as calls:
        assert _api_checkout(client, product).status_code == 201
    assert len(calls) == 1 and b"EVALSHA" in calls[0], calls

    for _ in range(2):
        assert _api_checkout(client, product).status_code == 201
    redis_client = cache._cache.get_client(write=True)
    hits_key = counter_key("v", "checkout", "ip", "203.0.113.7")
    assert redis_client.zcard(hits_key) == 3
    refused = _api_checkout(client, product)
    assert (refused.status_code, refused.json()["code"]) == (429, "throttled")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert Order.objects.count() == 4 and Decision.objects.count() == 4
    assert redis_client.zcard(hits_key) == 3
    assert _api_checkout(Client(REMOTE_ADDR="198.51.100.4"), product).status_code == 201  # its own budget


@pytest.mark.parametrize("cache_kind", ["redis", "process memory"])
def test_api_checkouts_refused_before_the_engine_reads_count_against_the_rate_limit(
    no_rules, settings, cache_kind, request
):
    """A checkout refused before the engine's command is sent (no gateway, a malformed body) counts its
    attempt on its way out, and over the limit answers 429 rather than its own error, as before."""
    from django.test import Client

    if cache_kind == "redis":
        request.getfixturevalue("redis_cache")
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "3/min"}
    product = factories.product_create(stock=10)
    client = Client(REMOTE_ADDR="203.0.113.8")
    settings.PAYMENT_GATEWAYS = []
    assert _api_checkout(client, product).status_code == 503
    malformed = client.post("/api/v1/orders/", {"product": product.pk, "quantity": "many"}, "application/json")
    assert malformed.status_code == 400
    assert _api_checkout(client, product).status_code == 503
    assert (_api_checkout(client, product).status_code, Order.objects.count()) == (429, 0)
