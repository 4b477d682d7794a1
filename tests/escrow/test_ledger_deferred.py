"""`ledger.balances_deferred`: transfers are booked at once, balances caught up once at the block's end."""

import pytest
from django.db import transaction
from django.utils import timezone

from escrow import ledger
from escrow.ledger_checks import ledger_problems
from escrow.models import AccountKind, Transfer

pytestmark = pytest.mark.django_db


@pytest.fixture
def accounts():
    return (
        ledger.platform_account(AccountKind.GATEWAY_CLEARING, "CNY"),
        ledger.platform_account(AccountKind.SUSPENSE, "CNY"),  # an account no other invariant watches
        ledger.platform_account(AccountKind.PLATFORM_FEES, "CNY"),
    )


def move(transfer_id, debit, credit, amount, **kwargs):
    return ledger.transfer(
        transfer_id=transfer_id, debit=debit, credit=credit, amount=amount, code="test", now=timezone.now(), **kwargs
    )


def test_balances_change_once_at_the_end_of_the_block(accounts):
    clearing, suspense, fees = accounts
    with transaction.atomic(), ledger.balances_deferred():
        move("a", clearing, suspense, 700)
        held = move("b", suspense, fees, 100, pending=True)
        ledger.pending_post(transfer_id="b:post", pending=held, now=timezone.now(), amount=60)
        suspense.refresh_from_db()
        assert suspense.credits_posted == 0  # not yet: the block has not ended
    suspense.refresh_from_db()
    fees.refresh_from_db()
    assert (suspense.credits_posted, suspense.debits_posted, suspense.debits_pending) == (700, 60, 0)
    assert (fees.credits_posted, fees.credits_pending) == (60, 0)
    assert ledger_problems() == []


def test_a_transfer_rolled_back_inside_the_block_changes_no_balance(accounts):
    clearing, suspense, _ = accounts
    with transaction.atomic(), ledger.balances_deferred():
        move("kept", clearing, suspense, 500)
        with pytest.raises(RuntimeError), transaction.atomic():
            move("undone", clearing, suspense, 999)
            raise RuntimeError("roll this savepoint back")
    suspense.refresh_from_db()
    assert suspense.credits_posted == 500
    assert not Transfer.objects.filter(transfer_id="undone").exists()
    assert ledger_problems() == []


def test_nested_blocks_leave_the_work_to_the_outermost(accounts):
    clearing, suspense, _ = accounts
    with transaction.atomic(), ledger.balances_deferred():
        with ledger.balances_deferred():
            move("inner", clearing, suspense, 300)
        suspense.refresh_from_db()
        assert suspense.credits_posted == 0
    suspense.refresh_from_db()
    assert suspense.credits_posted == 300


def test_an_error_caught_inside_the_transaction_still_leaves_the_books_consistent(accounts):
    clearing, suspense, _ = accounts
    with transaction.atomic(), pytest.raises(ValueError), ledger.balances_deferred():
        move("before-error", clearing, suspense, 250)
        raise ValueError("caught by the caller, who then commits")
    suspense.refresh_from_db()
    assert suspense.credits_posted == 250
    assert ledger_problems() == []


def test_a_replay_inside_the_block_is_still_a_no_op(accounts):
    clearing, suspense, _ = accounts
    with transaction.atomic(), ledger.balances_deferred():
        move("once", clearing, suspense, 400)
        move("once", clearing, suspense, 400)
        with pytest.raises(ledger.TransferConflict):
            move("once", clearing, suspense, 401)
    suspense.refresh_from_db()
    assert suspense.credits_posted == 400


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_block_refuses(accounts):
    with pytest.raises(AssertionError), ledger.balances_deferred():
        pass


def test_transfers_books_several_at_once_and_a_replay_changes_nothing(accounts):
    clearing, suspense, fees = accounts
    moves = [
        ledger.Move(transfer_id="m1", debit=clearing, credit=suspense, amount=300, code="test"),
        ledger.Move(transfer_id="m2", debit=suspense, credit=fees, amount=100, code="test", pending=True),
    ]
    with transaction.atomic(), ledger.balances_deferred():
        first = ledger.transfers(moves=moves, now=timezone.now())
        again = ledger.transfers(moves=moves, now=timezone.now())  # the same ids: booked one by one, no-ops
    assert [t.pk for t in again] == [t.pk for t in first]
    assert Transfer.objects.filter(transfer_id__in=["m1", "m2"]).count() == 2
    suspense.refresh_from_db()
    assert (suspense.credits_posted, suspense.debits_pending) == (300, 100)
    assert ledger_problems() == []


def test_transfers_with_a_changed_replay_raises_and_books_nothing_new(accounts):
    clearing, suspense, _ = accounts
    with transaction.atomic():
        ledger.transfers(
            moves=[ledger.Move(transfer_id="x1", debit=clearing, credit=suspense, amount=5, code="t")],
            now=timezone.now(),
        )
    with pytest.raises(ledger.TransferConflict), transaction.atomic():
        ledger.transfers(
            moves=[
                ledger.Move(transfer_id="x2", debit=clearing, credit=suspense, amount=7, code="t"),
                ledger.Move(transfer_id="x1", debit=clearing, credit=suspense, amount=6, code="t"),
            ],
            now=timezone.now(),
        )
    assert not Transfer.objects.filter(transfer_id="x2").exists()
    suspense.refresh_from_db()
    assert suspense.credits_posted == 5


def test_closing_transfers_apply_their_balances_at_once_and_a_replay_moves_nothing(accounts):
    """`transfers_closing` (the payment's last ledger write): booked and applied in one statement,
    inside a deferred block whose own transfers still wait for its end; a replay changes nothing."""
    clearing, suspense, fees = accounts
    moves = [
        ledger.Move(transfer_id="in", debit=clearing, credit=suspense, amount=900, code="test"),
        ledger.Move(transfer_id="held", debit=suspense, credit=fees, amount=90, code="test", pending=True),
    ]
    with transaction.atomic(), ledger.balances_deferred():
        move("deferred", clearing, suspense, 10)
        booked = ledger.transfers_closing(moves=moves, now=timezone.now())
        assert [row.transfer_id for row in booked] == ["in", "held"] and all(row.pk for row in booked)
        suspense.refresh_from_db()
        assert (suspense.credits_posted, suspense.debits_pending) == (900, 90)  # the deferred 10 not yet
    suspense.refresh_from_db()
    assert (suspense.credits_posted, suspense.debits_pending) == (910, 90)

    with transaction.atomic(), ledger.balances_deferred():
        again = ledger.transfers_closing(moves=moves, now=timezone.now())
    assert [row.pk for row in again] == [row.pk for row in booked]
    suspense.refresh_from_db()
    fees.refresh_from_db()
    assert (suspense.credits_posted, suspense.debits_pending, fees.credits_pending) == (910, 90, 90)
    assert Transfer.objects.filter(transfer_id__in=["in", "held"]).count() == 2
    assert ledger_problems() == []
