"""Races on PostgreSQL: real transactions in real threads leave exactly one outcome."""

from datetime import timedelta

from django.utils import timezone

from disputes import services
from disputes.models import Dispute, DisputeOutcome, DisputeStatus
from disputes.services import DisputeError
from escrow.ledger_checks import ledger_problems
from escrow.models import DisputeAction, OrderStatus, Refund
from tests import factories
from tests.disputes.helpers import opened
from tests.escrow.test_disputes_front import race, run_together


def escalated() -> Dispute:
    dispute = opened()
    services.dispute_contest(dispute_pk=dispute.pk, statement="No.", now=timezone.now())
    services.dispute_escalate(dispute_pk=dispute.pk, now=timezone.now())
    return dispute


@race
def test_two_staff_decisions_at_once_leave_one_outcome():
    for first, second in [("refund", "release"), ("release", "split"), ("split", "refund")]:
        dispute = escalated()
        judges = [factories.user_create(is_staff=True), factories.user_create(is_staff=True)]
        results = run_together(
            *[
                lambda outcome=outcome, judge=judge, pk=dispute.pk: services.dispute_decide(
                    dispute_pk=pk,
                    outcome=outcome,
                    buyer_percent=50 if outcome == "split" else None,
                    reason=f"{outcome} by {judge.username}",
                    now=timezone.now(),
                    actor=judge,
                )
                for outcome, judge in zip((first, second), judges, strict=True)
            ]
        )
        won = [r for r in results if isinstance(r, Dispute)]
        lost = [r for r in results if isinstance(r, DisputeError)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].code == "bad_state"
        dispute.refresh_from_db()
        assert dispute.status == DisputeStatus.RESOLVED and dispute.outcome == won[0].outcome
        assert DisputeAction.objects.filter(order=dispute.order, cause__endswith=":decision").count() == 1
        assert Refund.objects.filter(order=dispute.order).count() == (0 if dispute.outcome == "released" else 1)
        assert ledger_problems() == []


@race
def test_the_buyer_accepting_as_the_deadline_passes_leaves_one_outcome():
    for _ in range(3):
        dispute = opened()
        services.dispute_replace(dispute_pk=dispute.pk, now=timezone.now())
        deadline = Dispute.objects.get(pk=dispute.pk).deadline
        accepted, swept = run_together(
            lambda dispute=dispute, deadline=deadline: services.dispute_accept(
                dispute_pk=dispute.pk, now=deadline - timedelta(seconds=1)
            ),
            lambda deadline=deadline: services.disputes_sweep(now=deadline),
        )
        assert isinstance(accepted, Dispute) != (swept == 1), (accepted, swept)
        dispute.refresh_from_db()
        assert dispute.outcome == DisputeOutcome.RELEASED
        assert dispute.order.status == OrderStatus.COMPLETED
        assert DisputeAction.objects.filter(order=dispute.order, kind="release").count() == 1
        assert ledger_problems() == []


@race
def test_two_openings_at_once_leave_one_dispute():
    from tests.disputes.helpers import delivered

    for _ in range(3):
        order = delivered()
        results = run_together(
            *[
                lambda order=order: services.dispute_open(
                    order_pk=order.pk, reason="other", statement="Broken.", now=timezone.now()
                )
            ]
            * 2
        )
        assert sorted(type(r).__name__ for r in results) == ["Dispute", "DisputeError"], results
        assert next(r for r in results if isinstance(r, DisputeError)).code == "already_disputed"
        assert Dispute.objects.filter(order=order).count() == 1
        assert DisputeAction.objects.filter(order=order).count() == 1
        assert ledger_problems() == []


@race
def test_opening_as_the_buyer_confirms_leaves_one_outcome():
    from escrow import services as escrow_services
    from tests.disputes.helpers import delivered

    for _ in range(3):
        order = delivered()
        opened_, confirmed = run_together(
            lambda order=order: services.dispute_open(
                order_pk=order.pk, reason="other", statement="Broken.", now=timezone.now()
            ),
            lambda order=order: escrow_services.order_confirm_receipt(order=order, now=timezone.now()),
        )
        order.refresh_from_db()
        if isinstance(opened_, Dispute):
            assert order.status == OrderStatus.DISPUTED and not isinstance(confirmed, type(order))
        else:
            assert opened_.code == "bad_state" and order.status == OrderStatus.COMPLETED
            assert not Dispute.objects.filter(order=order).exists()
        assert ledger_problems() == []
