"""Escrow's front door for disputes: each service's path, its replay, its refusals, and its races."""

from contextlib import nullcontext
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from accounts.models import AuditEntry
from core.transitions import StateError
from escrow import ledger, services
from escrow.disputes_front import DisputeRefused, split_amounts
from escrow.ledger_checks import ledger_problems
from escrow.models import (
    AccountKind,
    DisputeAction,
    LedgerAccount,
    Order,
    OrderStatus,
    Refund,
    RefundStatus,
    Transfer,
)
from escrow.releases import order_release_lapsed
from shop import services as shop_services
from shop.models import CardKey, CardKeyStatus, Merchant
from shop.selectors import order_keys_plaintext
from tests import factories
from tests.conftest import requires_postgres
from tests.escrow.test_concurrency import run_in_threads

CAUSE = "dispute:1:decision:1"


@pytest.fixture(autouse=True)
def _no_rolling_reserve(settings):
    # The factories' merchants are new, so a rolling reserve would apply; it is tested in test_money_lifecycle.py.
    settings.RESERVE_PERCENT = 0


def delivered(run_on_commit=None, *, quantity=1, price=10000, stock=5, merchant=None) -> Order:
    """A delivered order, paid by signed webhook (inside a test transaction, pass `run_on_commit`)."""
    product = factories.product_create(stock=stock, price=price, merchant=merchant)
    with run_on_commit() if run_on_commit else nullcontext():
        order = factories.order_delivered(product=product, quantity=quantity)
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    return order


def disputed(run_on_commit, **kwargs) -> Order:
    order = delivered(run_on_commit, **kwargs)
    services.order_dispute_open(order_pk=order.pk, cause=f"dispute:{order.pk}:open", now=timezone.now())
    order.refresh_from_db()
    return order


def money(order: Order) -> tuple[int, int, int, int]:
    """(merchant available, platform fees, escrow, refunds owed to buyers) after posting."""
    merchant = ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, order.currency, order.merchant_id)
    fees = ledger.platform_account(AccountKind.PLATFORM_FEES, order.currency)
    escrow = ledger.platform_account(AccountKind.ESCROW, order.currency)
    owed = ledger.platform_account(AccountKind.BUYER_REFUNDS_PAYABLE, order.currency)
    return ledger.available_of(merchant), fees.credit_balance, escrow.credit_balance, owed.credit_balance


def everything() -> tuple:
    """All that a refused call must leave as it was."""
    return (
        list(Order.objects.order_by("pk").values_list("pk", "status", "completed_at")),
        list(CardKey.objects.order_by("pk").values_list("pk", "status", "order_id")),
        list(LedgerAccount.objects.order_by("pk").values_list("pk", "debits_posted", "credits_posted")),
        list(LedgerAccount.objects.order_by("pk").values_list("pk", "debits_pending", "credits_pending")),
        Transfer.objects.count(),
        Refund.objects.count(),
        DisputeAction.objects.count(),
        AuditEntry.objects.count(),
    )


def assert_refused(code: str, call, **kwargs):
    before = everything()
    with pytest.raises(DisputeRefused) as error:
        call(**kwargs)
    assert error.value.code == code, error.value
    assert str(error.value)  # a message for people, not only a code
    assert everything() == before


# --- the split arithmetic -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paid", "buyer_percent", "fee_percent", "expected"),
    [
        (10000, 50, "5", (5000, 4750, 250)),
        (999, 50, "5", (500, 474, 25)),  # refund 499.5 → 500 (half up); fee on 499 is 24.95 → 25
        (999, 37, "5", (370, 598, 31)),  # refund 369.63 → 370; fee on 629 is 31.45 → 31
        (10000, 0, "5", (0, 9500, 500)),
        (10000, 100, "5", (10000, 0, 0)),
        (1, 50, "5", (1, 0, 0)),  # 0.5 → 1: half up goes to the buyer
        (1999, 33, "2.50", (660, 1306, 33)),
    ],
)
def test_split_amounts_examples(paid, buyer_percent, fee_percent, expected):
    assert split_amounts(paid=paid, buyer_percent=buyer_percent, fee_percent=Decimal(fee_percent)) == expected


@given(
    paid=st.integers(min_value=0, max_value=10**13),
    buyer_percent=st.integers(min_value=0, max_value=100),
    fee_hundredths=st.integers(min_value=0, max_value=10000),
)
def test_split_parts_add_up_and_round_half_up(paid, buyer_percent, fee_hundredths):
    fee_percent = Decimal(fee_hundredths) / 100
    refund, share, fee = split_amounts(paid=paid, buyer_percent=buyer_percent, fee_percent=fee_percent)
    assert refund + share + fee == paid
    assert min(refund, share, fee) >= 0
    # Half up, worked out in integers: round(x) = floor(x + 1/2).
    assert refund == (2 * paid * buyer_percent + 100) // 200
    assert fee == (2 * (paid - refund) * fee_hundredths + 10000) // 20000


def test_split_amounts_refuses_a_percentage_outside_0_to_100():
    with pytest.raises(ValueError, match="between 0 and 100"):
        split_amounts(paid=100, buyer_percent=101, fee_percent=Decimal(5))


# --- open: the money freezes ------------------------------------------------------------------------------

db = pytest.mark.django_db


@db
def test_open_freezes_the_order_against_confirmation_and_the_release_timer(run_on_commit):
    order = delivered(run_on_commit)
    now = order.inspection_ends_at - timedelta(seconds=1)
    action = services.order_dispute_open(order_pk=order.pk, cause="dispute:7:open", now=now)

    order.refresh_from_db()
    assert order.status == OrderStatus.DISPUTED
    assert (action.order_id, action.kind, action.cause) == (order.pk, "open", "dispute:7:open")
    audit = AuditEntry.objects.get(action="order.disputed", subject_id=str(order.pk))
    assert audit.data["cause"] == "dispute:7:open"

    with pytest.raises(StateError):
        services.order_confirm_receipt(order=order, now=now)
    later = order.inspection_ends_at + timedelta(days=30)
    assert services.orders_release_due(now=later) == 0
    assert order_release_lapsed(order_pk=order.pk, now=later) is False

    order.refresh_from_db()
    assert order.status == OrderStatus.DISPUTED
    assert money(order) == (0, 0, 10000, 0)
    assert not order.transfers.filter(kind__in=["post_pending", "void_pending"]).exists()
    assert ledger_problems() == []


@db
def test_open_replayed_with_its_cause_is_a_no_op(run_on_commit):
    order = delivered(run_on_commit)
    now = timezone.now()
    first = services.order_dispute_open(order_pk=order.pk, cause="dispute:7:open", now=now)
    before = everything()
    again = services.order_dispute_open(order_pk=order.pk, cause="dispute:7:open", now=now + timedelta(days=9))
    assert again.pk == first.pk
    assert everything() == before


@db
def test_open_outside_the_inspection_window_is_refused(run_on_commit):
    order = delivered(run_on_commit)
    assert_refused(
        "outside_window",
        services.order_dispute_open,
        order_pk=order.pk,
        cause=CAUSE,
        now=order.inspection_ends_at,
    )
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED


@db
def test_open_is_refused_unless_the_order_is_delivered(run_on_commit):
    completed = delivered(run_on_commit)
    services.order_confirm_receipt(order=completed, now=timezone.now())
    assert_refused("bad_state", services.order_dispute_open, order_pk=completed.pk, cause=CAUSE, now=timezone.now())

    unpaid = factories.order_place(product=factories.product_create()).order
    assert_refused("bad_state", services.order_dispute_open, order_pk=unpaid.pk, cause=CAUSE, now=timezone.now())

    already = disputed(run_on_commit)
    assert_refused("bad_state", services.order_dispute_open, order_pk=already.pk, cause=CAUSE, now=timezone.now())
    assert_refused("not_found", services.order_dispute_open, order_pk=10**9, cause=CAUSE, now=timezone.now())
    assert ledger_problems() == []


@db
@pytest.mark.parametrize("cause", ["", "   ", "x" * 121, None])
def test_a_missing_or_overlong_cause_is_refused(run_on_commit, cause):
    order = delivered(run_on_commit)
    assert_refused("bad_cause", services.order_dispute_open, order_pk=order.pk, cause=cause, now=timezone.now())


@db
def test_a_cause_reused_for_another_action_is_refused(run_on_commit):
    order = disputed(run_on_commit)
    other = disputed(run_on_commit)
    now = timezone.now()
    assert_refused(
        "cause_conflict", services.order_dispute_release, order_pk=order.pk, cause=f"dispute:{order.pk}:open", now=now
    )
    services.order_dispute_split(order_pk=order.pk, buyer_percent=30, cause=CAUSE, now=now)
    # The same cause with other terms, or for another order, decides nothing.
    assert_refused(
        "cause_conflict", services.order_dispute_split, order_pk=order.pk, buyer_percent=31, cause=CAUSE, now=now
    )
    assert_refused(
        "cause_conflict", services.order_dispute_split, order_pk=other.pk, buyer_percent=30, cause=CAUSE, now=now
    )
    assert ledger_problems() == []


# --- release ---------------------------------------------------------------------------------------------------


@db
def test_release_pays_the_merchant_and_the_fee_exactly_once(run_on_commit):
    order = disputed(run_on_commit, price=10001)
    action = services.order_dispute_release(order_pk=order.pk, cause=CAUSE, now=timezone.now())
    order.refresh_from_db()
    assert order.status == OrderStatus.COMPLETED
    assert money(order) == (9501, 500, 0, 0)
    assert (action.refund_amount, action.share, action.fee, action.refund_id) == (0, 9501, 500, None)
    assert AuditEntry.objects.filter(action="order.dispute_decided", subject_id=str(order.pk)).count() == 1
    assert ledger_problems() == []

    before = everything()
    assert services.order_dispute_release(order_pk=order.pk, cause=CAUSE, now=timezone.now()).pk == action.pk
    assert everything() == before


@db
def test_release_is_refused_for_an_order_not_under_dispute(run_on_commit):
    order = delivered(run_on_commit)
    assert_refused("bad_state", services.order_dispute_release, order_pk=order.pk, cause=CAUSE, now=timezone.now())


# --- refund ----------------------------------------------------------------------------------------------------


@db
def test_full_refund_returns_everything_and_revokes_the_delivered_keys(run_on_commit):
    order = disputed(run_on_commit, quantity=2)
    keys = list(CardKey.objects.filter(order=order).values_list("pk", flat=True))
    with run_on_commit():
        action = services.order_dispute_refund(order_pk=order.pk, cause=CAUSE, now=timezone.now())
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert action.refund.amount == 20000 and action.refund.reason == "dispute"
    assert Refund.objects.get(pk=action.refund_id).status == RefundStatus.SUCCEEDED  # the sandbox paid it
    assert (action.refund_amount, action.share, action.fee) == (20000, 0, 0)
    assert set(CardKey.objects.filter(pk__in=keys).values_list("status", flat=True)) == {CardKeyStatus.REVOKED}
    assert money(order) == (0, 0, 0, 0)
    assert ledger_problems() == []

    before = everything()
    with run_on_commit():
        again = services.order_dispute_refund(order_pk=order.pk, cause=CAUSE, now=timezone.now())
    assert again.pk == action.pk and again.refund_id == action.refund_id
    assert everything() == before


@db
def test_refund_of_some_keys_revokes_them_and_pays_the_merchant_the_rest(run_on_commit):
    order = disputed(run_on_commit, quantity=3, price=333)  # paid 999
    keys = list(CardKey.objects.filter(order=order).order_by("pk").values_list("pk", flat=True))
    with run_on_commit():
        action = services.order_dispute_refund(order_pk=order.pk, cause=CAUSE, now=timezone.now(), key_pks=[keys[1]])
    order.refresh_from_db()
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    assert (action.refund_amount, action.share, action.fee) == (333, 633, 33)  # fee on 666: 33.3 → 33
    assert money(order) == (633, 33, 0, 0)
    assert CardKey.objects.get(pk=keys[1]).status == CardKeyStatus.REVOKED
    assert CardKey.objects.filter(pk__in=[keys[0], keys[2]], status=CardKeyStatus.SOLD).count() == 2
    assert ledger_problems() == []


@db
def test_refund_of_an_amount_leaves_the_keys_with_the_buyer(run_on_commit):
    order = disputed(run_on_commit, quantity=2, price=5000)
    with run_on_commit():
        action = services.order_dispute_refund(order_pk=order.pk, cause=CAUSE, now=timezone.now(), amount=2500)
    order.refresh_from_db()
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    assert (action.refund_amount, action.share, action.fee) == (2500, 7125, 375)
    assert money(order) == (7125, 375, 0, 0)
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).count() == 2
    assert ledger_problems() == []

    before = everything()
    assert (
        services.order_dispute_refund(order_pk=order.pk, cause=CAUSE, now=timezone.now(), amount=2500).pk == action.pk
    )
    assert everything() == before


@db
def test_refund_of_the_whole_amount_is_a_full_refund(run_on_commit):
    order = disputed(run_on_commit)
    with run_on_commit():
        action = services.order_dispute_refund(order_pk=order.pk, cause=CAUSE, now=timezone.now(), amount=10000)
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert CardKey.objects.get(order=order).status == CardKeyStatus.REVOKED
    assert (action.refund_amount, action.share, action.fee) == (10000, 0, 0)
    assert ledger_problems() == []


@db
def test_bad_refunds_change_nothing(run_on_commit):
    order = disputed(run_on_commit, quantity=2)
    other = disputed(run_on_commit)
    foreign_key = CardKey.objects.get(order=other).pk
    mine = CardKey.objects.filter(order=order).first().pk
    now = timezone.now()
    refund = services.order_dispute_refund
    assert_refused("bad_amount", refund, order_pk=order.pk, cause=CAUSE, now=now, amount=0)
    assert_refused("bad_amount", refund, order_pk=order.pk, cause=CAUSE, now=now, amount=20001)
    assert_refused("bad_amount", refund, order_pk=order.pk, cause=CAUSE, now=now, amount=2500.0)
    assert_refused("bad_keys", refund, order_pk=order.pk, cause=CAUSE, now=now, key_pks=[foreign_key])
    assert_refused("bad_keys", refund, order_pk=order.pk, cause=CAUSE, now=now, key_pks=[])
    assert_refused("bad_terms", refund, order_pk=order.pk, cause=CAUSE, now=now, key_pks=[mine], amount=100)
    delivered_only = delivered(run_on_commit)
    assert_refused("bad_state", refund, order_pk=delivered_only.pk, cause=CAUSE, now=now)
    assert ledger_problems() == []


# --- split -----------------------------------------------------------------------------------------------------


@db
@pytest.mark.parametrize(
    ("price", "buyer_percent", "fee_percent", "status", "key_status"),
    [
        (999, 37, "5", OrderStatus.PARTIALLY_REFUNDED, CardKeyStatus.SOLD),
        (999, 50, "5", OrderStatus.PARTIALLY_REFUNDED, CardKeyStatus.SOLD),
        (1999, 33, "2.50", OrderStatus.PARTIALLY_REFUNDED, CardKeyStatus.SOLD),
        (10000, 100, "5", OrderStatus.REFUNDED, CardKeyStatus.REVOKED),
        (10000, 0, "5", OrderStatus.COMPLETED, CardKeyStatus.SOLD),
        (1, 40, "5", OrderStatus.COMPLETED, CardKeyStatus.SOLD),  # 0.4 of a fen rounds to no refund
    ],
)
def test_split_books_exactly_the_parts_that_add_up(
    run_on_commit, price, buyer_percent, fee_percent, status, key_status
):
    merchant = factories.merchant_create(fee_percent=fee_percent)
    order = disputed(run_on_commit, price=price, merchant=merchant)
    refund, share, fee = split_amounts(paid=price, buyer_percent=buyer_percent, fee_percent=Decimal(fee_percent))
    with run_on_commit():
        action = services.order_dispute_split(
            order_pk=order.pk, buyer_percent=buyer_percent, cause=CAUSE, now=timezone.now()
        )
    order.refresh_from_db()
    assert order.status == status
    assert (action.refund_amount, action.share, action.fee) == (refund, share, fee)
    assert refund + share + fee == price
    assert money(order) == (share, fee, 0, 0)  # the sandbox has paid the refund back already
    assert sum(Refund.objects.filter(order=order).values_list("amount", flat=True)) == refund
    assert CardKey.objects.get(order=order).status == key_status
    assert ledger_problems() == []

    before = everything()
    with run_on_commit():
        again = services.order_dispute_split(
            order_pk=order.pk, buyer_percent=buyer_percent, cause=CAUSE, now=timezone.now()
        )
    assert again.pk == action.pk
    assert everything() == before


@db
def test_split_whose_fee_no_longer_fits_the_held_fee_is_refused(run_on_commit):
    # The merchant's rate rose after the payment: the fee on their part would exceed the fee held.
    merchant = factories.merchant_create(fee_percent="5")
    order = disputed(run_on_commit, merchant=merchant)
    Merchant.objects.filter(pk=merchant.pk).update(fee_percent=Decimal(20))
    assert_refused(
        "bad_amounts",
        services.order_dispute_split,
        order_pk=order.pk,
        buyer_percent=10,
        cause=CAUSE,
        now=timezone.now(),
    )


@db
@pytest.mark.parametrize("buyer_percent", [-1, 101, True, 50.0])
def test_split_with_a_bad_percentage_changes_nothing(run_on_commit, buyer_percent):
    order = disputed(run_on_commit)
    assert_refused(
        "bad_percent",
        services.order_dispute_split,
        order_pk=order.pk,
        buyer_percent=buyer_percent,
        cause=CAUSE,
        now=timezone.now(),
    )


# --- replace a key -----------------------------------------------------------------------------------------------


@db
def test_replace_gives_a_fresh_key_and_retires_the_disputed_one(run_on_commit):
    order = disputed(run_on_commit, quantity=2, stock=3)
    old, kept = CardKey.objects.filter(order=order).order_by("pk")
    shown_before = order_keys_plaintext(order_pk=order.pk)
    action = services.order_dispute_replace_key(order_pk=order.pk, key_pk=old.pk, cause=CAUSE, now=timezone.now())

    fresh = CardKey.objects.get(pk=action.replacement_key_id)
    assert action.replaced_key_id == old.pk
    assert (fresh.order_id, fresh.status, fresh.product_id) == (order.pk, CardKeyStatus.SOLD, order.product_id)
    assert CardKey.objects.get(pk=old.pk).status == CardKeyStatus.REPLACED
    assert CardKey.objects.get(pk=kept.pk).status == CardKeyStatus.SOLD
    shown = order_keys_plaintext(order_pk=order.pk)
    assert len(shown) == 2 and shown_before[1] in shown and shown_before[0] not in shown
    assert CardKey.objects.filter(product=order.product, status=CardKeyStatus.AVAILABLE).count() == 0
    audit = AuditEntry.objects.get(action="order.key_replaced", subject_id=str(order.pk))
    assert (audit.data["replaced_key_id"], audit.data["replacement_key_id"]) == (old.pk, fresh.pk)
    order.refresh_from_db()
    assert order.status == OrderStatus.DISPUTED  # the money stays frozen until a decision
    assert money(order) == (0, 0, 20000, 0)

    before = everything()
    again = services.order_dispute_replace_key(order_pk=order.pk, key_pk=old.pk, cause=CAUSE, now=timezone.now())
    assert again.pk == action.pk
    assert everything() == before

    # The replaced key is never sold again: not restocked by a refund, not offered to a checkout.
    assert shop_services.keys_refund_restock(order_pk=order.pk, key_pks=[old.pk]) == 0
    with run_on_commit():
        services.order_dispute_refund(order_pk=order.pk, cause="dispute:1:decision:2", now=timezone.now())
    assert CardKey.objects.get(pk=old.pk).status == CardKeyStatus.REPLACED
    assert set(CardKey.objects.filter(pk__in=[fresh.pk, kept.pk]).values_list("status", flat=True)) == {"revoked"}
    assert ledger_problems() == []


@db
def test_replace_without_stock_is_refused_and_changes_nothing(run_on_commit):
    order = disputed(run_on_commit, stock=1)
    key = CardKey.objects.get(order=order)
    assert_refused(
        "out_of_stock",
        services.order_dispute_replace_key,
        order_pk=order.pk,
        key_pk=key.pk,
        cause=CAUSE,
        now=timezone.now(),
    )
    assert CardKey.objects.get(pk=key.pk).status == CardKeyStatus.SOLD


@db
def test_replace_refuses_a_key_not_delivered_on_the_order(run_on_commit):
    order = disputed(run_on_commit)
    other = disputed(run_on_commit)
    replace = services.order_dispute_replace_key
    foreign = CardKey.objects.get(order=other).pk
    assert_refused("bad_key", replace, order_pk=order.pk, key_pk=foreign, cause=CAUSE, now=timezone.now())
    not_disputed = delivered(run_on_commit)
    key = CardKey.objects.get(order=not_disputed).pk
    assert_refused("bad_state", replace, order_pk=not_disputed.pk, key_pk=key, cause=CAUSE, now=timezone.now())


# --- verify_ledger's dispute invariants ------------------------------------------------------------------------


@db
def test_ledger_check_finds_money_released_from_a_disputed_order(run_on_commit):
    order = disputed(run_on_commit)
    services.hold_release(order=order, now=timezone.now())  # as a path that forgot the freeze would
    problems = ledger_problems()
    assert any(f"Order {order.pk} is disputed" in problem for problem in problems), problems


@db
def test_ledger_check_finds_a_decision_that_does_not_add_up(run_on_commit):
    order = disputed(run_on_commit)
    with run_on_commit():
        action = services.order_dispute_split(order_pk=order.pk, buyer_percent=40, cause=CAUSE, now=timezone.now())
    assert ledger_problems() == []
    DisputeAction.objects.filter(pk=action.pk).update(share=action.share + 1)
    problems = ledger_problems()
    assert any(CAUSE in problem and "!= paid" in problem for problem in problems), problems
    assert any(CAUSE in problem and "ledger booked" in problem for problem in problems), problems


# --- races on PostgreSQL ---------------------------------------------------------------------------------------


def run_together(*works):
    """Run each callable in its own thread and connection, released together by a barrier."""
    return run_in_threads(len(works), lambda index: works[index]())


def race(test):
    """A race on PostgreSQL: real transactions in real threads (row locks, SKIP LOCKED)."""
    for mark in (requires_postgres, pytest.mark.postgres, pytest.mark.django_db(transaction=True)):
        test = mark(test)
    return test


def assert_one_outcome(order: Order, opened, other_won: bool) -> None:
    """Either the dispute froze the order and the other side moved nothing, or the reverse."""
    order.refresh_from_db()
    if isinstance(opened, DisputeAction):
        assert not other_won
        assert order.status == OrderStatus.DISPUTED
        assert money(order)[0] == 0  # the merchant's (the fee account is shared across rounds)
        assert not order.transfers.filter(kind__in=["post_pending", "void_pending"]).exists()
    else:
        assert isinstance(opened, DisputeRefused) and opened.code == "bad_state", opened
        assert other_won
        assert order.status == OrderStatus.COMPLETED
        assert not DisputeAction.objects.filter(order=order).exists()
    assert ledger_problems() == []


def open_against_confirm(order: Order) -> None:
    now = order.inspection_ends_at - timedelta(seconds=1)
    opened, confirmed = run_together(
        lambda: services.order_dispute_open(order_pk=order.pk, cause=f"dispute:{order.pk}:open", now=now),
        lambda: services.order_confirm_receipt(order=order, now=now),
    )
    assert isinstance(confirmed, Order | StateError), confirmed
    assert_one_outcome(order, opened, other_won=isinstance(confirmed, Order))


def open_against_timer(order: Order) -> None:
    # The buyer's request is checked a moment before the window ends; the timer fires as it ends.
    opened, released = run_together(
        lambda: services.order_dispute_open(
            order_pk=order.pk,
            cause=f"dispute:{order.pk}:open",
            now=order.inspection_ends_at - timedelta(milliseconds=1),
        ),
        lambda: services.orders_release_due(now=order.inspection_ends_at),
    )
    assert released in (0, 1), released
    assert_one_outcome(order, opened, other_won=released == 1)
    # Whichever lost, a later run of the timer changes nothing.
    before = everything()
    assert services.orders_release_due(now=order.inspection_ends_at + timedelta(days=30)) == 0
    assert everything() == before


@race
def test_dispute_open_racing_confirm_receipt_leaves_one_outcome():
    for _ in range(5):
        open_against_confirm(delivered())


@race
def test_dispute_open_racing_the_release_timer_leaves_one_outcome():
    for _ in range(5):
        open_against_timer(delivered())


@race
def test_replacement_racing_a_checkout_for_the_last_key_never_sells_it_twice():
    order = delivered(stock=2)  # one key left
    old = CardKey.objects.get(order=order)
    services.order_dispute_open(order_pk=order.pk, cause="dispute:1:open", now=timezone.now())
    replaced, placed = run_together(
        lambda: services.order_dispute_replace_key(order_pk=order.pk, key_pk=old.pk, cause=CAUSE, now=timezone.now()),
        lambda: factories.order_place(product=order.product, email="rival@example.com"),
    )
    got = [isinstance(replaced, DisputeAction), isinstance(placed, services.PlacedOrder)]
    assert got.count(True) == 1, (replaced, placed)
    if got[0]:
        assert isinstance(placed, services.CheckoutError) and placed.code == "out_of_stock"
        assert CardKey.objects.get(pk=old.pk).status == CardKeyStatus.REPLACED
    else:
        assert isinstance(replaced, DisputeRefused) and replaced.code == "out_of_stock"
        assert CardKey.objects.get(pk=old.pk).status == CardKeyStatus.SOLD
    assert CardKey.objects.filter(product=order.product, status=CardKeyStatus.AVAILABLE).count() == 0
    assert ledger_problems() == []
