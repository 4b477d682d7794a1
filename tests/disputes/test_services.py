"""Every path of a dispute and every deadline, by moving the clock; the ledger stays clean after each."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import AuditEntry
from disputes import selectors, services
from disputes.models import Dispute, DisputeOutcome, DisputeStatus
from disputes.services import DisputeError
from escrow import ledger
from escrow.ledger_checks import ledger_problems
from escrow.models import AccountKind, DisputeAction, OrderStatus, Refund
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.disputes.helpers import delivered, everything, opened

db = pytest.mark.django_db
HOUR = timedelta(hours=1)


def merchant_available(order) -> int:
    account = ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, order.currency, order.merchant_id)
    return ledger.available_of(account)


def fresh(dispute: Dispute) -> Dispute:
    return Dispute.objects.select_related("order").get(pk=dispute.pk)


def assert_refused(code: str, call, **kwargs):
    before = everything()
    with pytest.raises(DisputeError) as refused:
        call(**kwargs)
    assert refused.value.code == code, refused.value
    assert everything() == before


def staff():
    return factories.user_create(is_staff=True)


# --- opening ----------------------------------------------------------------------------------------------


@db
def test_open_freezes_the_order_and_gives_the_merchant_a_deadline(run_on_commit, settings):
    settings.DISPUTE_MERCHANT_HOURS = 48
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    assert dispute.status == DisputeStatus.OPEN
    assert dispute.deadline == now + 48 * HOUR
    assert dispute.order.status == OrderStatus.DISPUTED
    assert [k.pk for k in dispute.keys.all()] == list(dispute.order.card_keys.values_list("pk", flat=True))
    assert DisputeAction.objects.get(order=dispute.order).cause == f"dispute:{dispute.pk}:open"
    assert AuditEntry.objects.filter(action="dispute.opened", subject_id=str(dispute.pk)).exists()
    assert [m.extra_headers["X-Shop-Event"] for m in mail.outbox].count("dispute.opened") == 2
    assert ledger_problems() == []


@db
def test_open_of_some_keys_of_several(run_on_commit):
    order = delivered(run_on_commit, quantity=3)
    keys = sorted(order.card_keys.values_list("pk", flat=True))
    dispute = services.dispute_open(
        order_pk=order.pk, reason="key_used", statement="Used.", key_pks=[keys[1]], now=timezone.now()
    )
    assert list(dispute.keys.values_list("pk", flat=True)) == [keys[1]]


@db
def test_open_outside_the_window_or_twice_is_refused_and_changes_nothing(run_on_commit):
    order = delivered(run_on_commit)
    kwargs = {"order_pk": order.pk, "reason": "other", "statement": "x"}
    assert_refused("outside_window", services.dispute_open, now=order.inspection_ends_at, **kwargs)
    services.dispute_open(now=timezone.now(), **kwargs)
    assert_refused("already_disputed", services.dispute_open, now=timezone.now(), **kwargs)


@db
@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"reason": "bored"}, "bad_reason"),
        ({"statement": "  "}, "invalid"),
        ({"statement": "x" * 2001}, "too_long"),
        ({"key_pks": [999999]}, "bad_keys"),
        ({"key_pks": []}, "bad_keys"),
    ],
)
def test_open_with_bad_input_changes_nothing(run_on_commit, change, code):
    order = delivered(run_on_commit)
    kwargs = {"order_pk": order.pk, "reason": "other", "statement": "x", "now": timezone.now(), **change}
    assert_refused(code, services.dispute_open, **kwargs)


# --- the merchant answers ---------------------------------------------------------------------------------------


@db
def test_replace_then_accept_releases_to_the_merchant(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    old_key = dispute.keys.get()
    services.dispute_replace(dispute_pk=dispute.pk, now=now + HOUR)
    dispute = fresh(dispute)
    new_key = dispute.keys.get()
    assert dispute.status == DisputeStatus.REPLACED
    assert CardKey.objects.get(pk=old_key.pk).status == CardKeyStatus.REPLACED
    assert new_key.pk != old_key.pk and new_key.status == CardKeyStatus.SOLD and new_key.order_id == dispute.order_id
    assert dispute.deadline == now + HOUR + timedelta(hours=48)
    assert merchant_available(dispute.order) == 0

    services.dispute_accept(dispute_pk=dispute.pk, now=now + 2 * HOUR)
    dispute = fresh(dispute)
    assert (dispute.status, dispute.outcome) == (DisputeStatus.RESOLVED, DisputeOutcome.RELEASED)
    assert dispute.order.status == OrderStatus.COMPLETED
    assert merchant_available(dispute.order) > 0
    assert ledger_problems() == []
    assert_refused("bad_state", services.dispute_accept, dispute_pk=dispute.pk, now=now + 3 * HOUR)


@db
def test_replace_without_stock_is_refused_and_changes_nothing(run_on_commit):
    dispute = opened(run_on_commit, stock=1)
    assert_refused("out_of_stock", services.dispute_replace, dispute_pk=dispute.pk, now=timezone.now())
    assert fresh(dispute).status == DisputeStatus.OPEN


@db
def test_reopen_once_after_a_replacement_then_escalate(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    services.dispute_replace(dispute_pk=dispute.pk, now=now)
    services.dispute_reopen(dispute_pk=dispute.pk, statement="This one fails too.", now=now + HOUR)
    dispute = fresh(dispute)
    assert (dispute.status, dispute.reopen_count) == (DisputeStatus.OPEN, 1)
    assert dispute.deadline == now + HOUR + timedelta(hours=48)
    services.dispute_replace(dispute_pk=dispute.pk, now=now + 2 * HOUR)
    assert CardKey.objects.filter(order=dispute.order, status=CardKeyStatus.REPLACED).count() == 2
    assert_refused(
        "reopened_already", services.dispute_reopen, dispute_pk=dispute.pk, statement="again", now=now + 3 * HOUR
    )
    services.dispute_escalate(dispute_pk=dispute.pk, now=now + 3 * HOUR)
    assert fresh(dispute).status == DisputeStatus.ESCALATED
    assert ledger_problems() == []


@db
def test_merchant_refund_of_the_disputed_keys(run_on_commit):
    order = delivered(run_on_commit, quantity=2)
    keys = sorted(order.card_keys.values_list("pk", flat=True))
    dispute = services.dispute_open(
        order_pk=order.pk, reason="key_used", statement="Used.", key_pks=[keys[0]], now=timezone.now()
    )
    with run_on_commit():
        services.dispute_refund(dispute_pk=dispute.pk, now=timezone.now())
    dispute = fresh(dispute)
    assert (dispute.status, dispute.outcome) == (DisputeStatus.RESOLVED, DisputeOutcome.REFUNDED)
    assert dispute.order.status == OrderStatus.PARTIALLY_REFUNDED
    assert Refund.objects.get(order=order).amount == order.unit_price
    assert CardKey.objects.get(pk=keys[0]).status == CardKeyStatus.REVOKED
    assert CardKey.objects.get(pk=keys[1]).status == CardKeyStatus.SOLD
    assert ledger_problems() == []


@db
def test_merchant_full_refund(run_on_commit):
    dispute = opened(run_on_commit, quantity=2, key_pks=None)
    with run_on_commit():
        services.dispute_refund(dispute_pk=dispute.pk, now=timezone.now(), full=True)
    assert fresh(dispute).order.status == OrderStatus.REFUNDED
    assert Refund.objects.get(order=dispute.order).amount == dispute.order.amount
    assert ledger_problems() == []


# --- contest, escalation and each decision ---------------------------------------------------------------------


def escalated(run_on_commit, now):
    dispute = opened(run_on_commit, now=now)
    services.dispute_contest(dispute_pk=dispute.pk, statement="The key worked when we sold it.", now=now + HOUR)
    assert fresh(dispute).status == DisputeStatus.CONTESTED
    services.dispute_escalate(dispute_pk=dispute.pk, now=now + 2 * HOUR)
    dispute = fresh(dispute)
    assert dispute.status == DisputeStatus.ESCALATED
    assert dispute.deadline == now + 2 * HOUR + timedelta(hours=72)
    return dispute


@db
@pytest.mark.parametrize(
    ("outcome", "percent", "order_status", "refunded"),
    [
        ("refund", None, OrderStatus.REFUNDED, 10000),
        ("release", None, OrderStatus.COMPLETED, 0),
        ("split", 30, OrderStatus.PARTIALLY_REFUNDED, 3000),
    ],
)
def test_contest_escalate_and_each_decision(run_on_commit, outcome, percent, order_status, refunded):
    now = timezone.now()
    dispute = escalated(run_on_commit, now)
    judge = staff()
    with run_on_commit():
        services.dispute_decide(
            dispute_pk=dispute.pk, outcome=outcome, buyer_percent=percent, reason="Logs show it.", now=now, actor=judge
        )
    dispute = fresh(dispute)
    assert dispute.status == DisputeStatus.RESOLVED
    assert dispute.decided_by == judge and dispute.decision_reason == "Logs show it."
    assert dispute.order.status == order_status
    assert sum(Refund.objects.filter(order=dispute.order).values_list("amount", flat=True)) == refunded
    assert DisputeAction.objects.get(cause=f"dispute:{dispute.pk}:decision").refund_amount == refunded
    entry = AuditEntry.objects.get(action="dispute.resolved", subject_id=str(dispute.pk))
    assert entry.actor == judge and entry.data["outcome"] == dispute.outcome
    assert dispute.messages.last().body == "Logs show it."
    assert ledger_problems() == []
    # A second decision is refused and moves nothing.
    assert_refused(
        "bad_state", services.dispute_decide, dispute_pk=dispute.pk, outcome="release", reason="x", now=now, actor=judge
    )


@db
def test_decisions_refused_by_the_rules_change_nothing(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    judge = staff()
    decide = services.dispute_decide
    assert_refused("bad_state", decide, dispute_pk=dispute.pk, outcome="refund", reason="r", now=now, actor=judge)
    services.dispute_contest(dispute_pk=dispute.pk, statement="No.", now=now)
    services.dispute_escalate(dispute_pk=dispute.pk, now=now)
    assert_refused("invalid", decide, dispute_pk=dispute.pk, outcome="refund", reason=" ", now=now, actor=judge)
    assert_refused(
        "not_staff", decide, dispute_pk=dispute.pk, outcome="refund", reason="r", now=now, actor=factories.user_create()
    )
    assert_refused("bad_outcome", decide, dispute_pk=dispute.pk, outcome="coin", reason="r", now=now, actor=judge)
    for percent in (None, -1, 101, True):
        assert_refused(
            "bad_percent",
            decide,
            dispute_pk=dispute.pk,
            outcome="split",
            buyer_percent=percent,
            reason="r",
            now=now,
            actor=judge,
        )


# --- deadlines ---------------------------------------------------------------------------------------------------


@db
def test_merchant_silence_refunds_the_disputed_keys(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    assert services.disputes_sweep(now=dispute.deadline - timedelta(seconds=1)) == 0
    with run_on_commit():
        assert services.disputes_sweep(now=dispute.deadline) == 1
    dispute = fresh(dispute)
    assert (dispute.status, dispute.outcome) == (DisputeStatus.RESOLVED, DisputeOutcome.REFUNDED)
    assert dispute.order.status == OrderStatus.REFUNDED
    assert ledger_problems() == []
    before = everything()
    assert services.disputes_sweep(now=dispute.deadline + timedelta(days=30)) == 0
    assert everything() == before


@db
def test_buyer_silence_after_a_replacement_releases(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    services.dispute_replace(dispute_pk=dispute.pk, now=now)
    deadline = fresh(dispute).deadline
    assert services.disputes_sweep(now=deadline - timedelta(seconds=1)) == 0
    assert services.disputes_sweep(now=deadline) == 1
    dispute = fresh(dispute)
    assert (dispute.outcome, dispute.order.status) == (DisputeOutcome.RELEASED, OrderStatus.COMPLETED)
    assert ledger_problems() == []


@db
def test_buyer_silence_after_a_contest_releases(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    services.dispute_contest(dispute_pk=dispute.pk, statement="It works.", now=now)
    assert services.disputes_sweep(now=fresh(dispute).deadline) == 1
    dispute = fresh(dispute)
    assert (dispute.outcome, dispute.order.status) == (DisputeOutcome.RELEASED, OrderStatus.COMPLETED)
    assert ledger_problems() == []


@db
def test_a_contest_the_buyer_answered_goes_to_staff_at_the_deadline(run_on_commit, settings):
    settings.DISPUTE_ARBITRATION_HOURS = 72
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    services.dispute_contest(dispute_pk=dispute.pk, statement="It works.", now=now)
    services.dispute_message_post(dispute_pk=dispute.pk, role="buyer", body="It does not.", now=now + HOUR)
    deadline = fresh(dispute).deadline
    assert services.disputes_sweep(now=deadline) == 1
    dispute = fresh(dispute)
    assert dispute.status == DisputeStatus.ESCALATED
    assert dispute.deadline == deadline + 72 * HOUR
    assert dispute.order.status == OrderStatus.DISPUTED
    # Staff deadlines are flagged, never decided by the clock.
    assert services.disputes_sweep(now=deadline + 1000 * HOUR) == 0
    queue = list(selectors.disputes_arbitration_queue(now=deadline + 73 * HOUR))
    assert [(d.pk, d.is_overdue) for d in queue] == [(dispute.pk, True)]
    assert ledger_problems() == []


@db
def test_a_staff_question_restarts_that_partys_clock(run_on_commit, settings):
    settings.DISPUTE_MERCHANT_HOURS = 48
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    judge = staff()
    asked_at = now + 40 * HOUR
    services.dispute_message_post(
        dispute_pk=dispute.pk,
        role="staff",
        body="Do you have logs?",
        question_for="merchant",
        now=asked_at,
        author=judge,
    )
    assert fresh(dispute).deadline == asked_at + 48 * HOUR
    # The first deadline passes and nothing happens; the restarted one applies the silence rule.
    assert services.disputes_sweep(now=now + 49 * HOUR) == 0
    assert services.disputes_sweep(now=asked_at + 48 * HOUR) == 1
    assert fresh(dispute).outcome == DisputeOutcome.REFUNDED
    assert AuditEntry.objects.filter(action="dispute.question_asked", actor=judge).exists()


@db
def test_an_answer_before_the_sweep_wins(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    services.dispute_contest(dispute_pk=dispute.pk, statement="No.", now=dispute.deadline - timedelta(seconds=1))
    assert services.disputes_sweep(now=dispute.deadline) == 0
    assert fresh(dispute).status == DisputeStatus.CONTESTED


@db
def test_messages_are_refused_on_a_resolved_dispute(run_on_commit):
    dispute = opened(run_on_commit)
    services.dispute_refund(dispute_pk=dispute.pk, now=timezone.now())
    assert_refused(
        "bad_state", services.dispute_message_post, dispute_pk=dispute.pk, role="buyer", body="hi", now=timezone.now()
    )
    assert_refused(
        "bad_question",
        services.dispute_message_post,
        dispute_pk=dispute.pk,
        role="buyer",
        body="hi",
        question_for="merchant",
        now=timezone.now(),
    )


@db
def test_answers_after_their_deadline_are_refused_and_the_silence_rule_applies(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    late = dispute.deadline
    assert_refused("deadline_passed", services.dispute_replace, dispute_pk=dispute.pk, now=late)
    assert_refused("deadline_passed", services.dispute_contest, dispute_pk=dispute.pk, statement="No.", now=late)

    other = opened(run_on_commit, now=now)
    services.dispute_contest(dispute_pk=other.pk, statement="No.", now=now)
    late = fresh(other).deadline
    assert_refused("deadline_passed", services.dispute_escalate, dispute_pk=other.pk, now=late)
    assert services.disputes_sweep(now=late) == 2  # both silence rules: a refund and a release
    assert (fresh(dispute).outcome, fresh(other).outcome) == (DisputeOutcome.REFUNDED, DisputeOutcome.RELEASED)
    assert ledger_problems() == []


@db
def test_the_beat_task_applies_the_silence_rules(run_on_commit):
    import time_machine

    from config.celery import app
    from disputes.tasks import disputes_sweep_task

    schedule = app.conf.beat_schedule["disputes.disputes_sweep"]
    assert schedule["task"] == disputes_sweep_task.name
    dispute = opened(run_on_commit)
    with time_machine.travel(dispute.deadline + timedelta(seconds=1)), run_on_commit():
        assert disputes_sweep_task.delay().get() == 1
    assert fresh(dispute).outcome == DisputeOutcome.REFUNDED
    assert ledger_problems() == []


@db
def test_each_step_notifies_both_parties_after_commit(run_on_commit):
    dispute = opened(run_on_commit)
    mail.outbox.clear()
    with run_on_commit() as callbacks:
        services.dispute_contest(dispute_pk=dispute.pk, statement="No.", now=timezone.now())
        assert mail.outbox == []  # nothing leaves before the commit
    assert callbacks
    assert sorted(m.to[0] for m in mail.outbox) == sorted([dispute.order.email, dispute.order.merchant.user.email])
    assert all(m.extra_headers["X-Shop-Event"] == "dispute.contested" for m in mail.outbox)


@db
def test_after_a_reopen_the_merchants_silence_refunds_the_replacement(run_on_commit):
    now = timezone.now()
    dispute = opened(run_on_commit, now=now, quantity=2, key_pks=None)
    services.dispute_replace(dispute_pk=dispute.pk, now=now)
    services.dispute_reopen(dispute_pk=dispute.pk, statement="Both fail.", now=now)
    with run_on_commit():
        assert services.disputes_sweep(now=fresh(dispute).deadline) == 1
    dispute = fresh(dispute)
    assert (dispute.outcome, dispute.order.status) == (DisputeOutcome.REFUNDED, OrderStatus.REFUNDED)
    assert Refund.objects.get(order=dispute.order).amount == dispute.order.amount
    statuses = sorted(CardKey.objects.filter(order=dispute.order).values_list("status", flat=True))
    assert statuses == ["replaced", "replaced", "revoked", "revoked"]
    assert ledger_problems() == []
