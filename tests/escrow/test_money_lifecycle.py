"""Timers, refunds and the rolling reserve, driven through the services with a moved clock."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.money import percent_of
from escrow import ledger, refunds, services
from escrow.ledger_checks import ledger_problems
from escrow.models import (
    ORDER_TRANSITIONS,
    AccountKind,
    KeyDisposition,
    Order,
    OrderStatus,
    Refund,
    RefundStatus,
    ReserveHold,
    Transfer,
)
from shop.models import CardKey, CardKeyStatus, Merchant
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_reserve(settings):
    settings.RESERVE_PERCENT = 0


def account(kind, order, merchant=True):
    if merchant:
        return ledger.merchant_account(kind, order.currency, order.merchant_id)
    return ledger.platform_account(kind, order.currency)


def available(order):
    return ledger.available_of(account(AccountKind.MERCHANT_AVAILABLE, order))


def delivered(run_on_commit, *, quantity=1, price=10000, stock=5, merchant=None):
    product = factories.product_create(stock=stock, price=price, merchant=merchant)
    with run_on_commit():
        order = factories.order_delivered(product=product, quantity=quantity)
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    return order


# --- timers -------------------------------------------------------------------------------------------


def test_lapsed_window_releases_once_and_not_before(run_on_commit, no_reserve):
    order = delivered(run_on_commit, price=10001)
    assert services.orders_release_due(now=order.inspection_ends_at - timedelta(seconds=1)) == 0
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert available(order) == 0

    assert services.orders_release_due(now=order.inspection_ends_at) == 1
    order.refresh_from_db()
    assert order.status == OrderStatus.COMPLETED
    assert available(order) == 9501
    assert account(AccountKind.PLATFORM_FEES, order, merchant=False).credit_balance == 500
    transfers = Transfer.objects.count()
    assert services.orders_release_due(now=order.inspection_ends_at + timedelta(days=1)) == 0
    assert Transfer.objects.count() == transfers
    assert ledger_problems() == []


def test_disputed_order_is_not_released(run_on_commit, no_reserve):
    order = delivered(run_on_commit)
    # No disputes app yet: the buyer's dispute is the order's own transition.
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.DISPUTED)
    assert services.orders_release_due(now=order.inspection_ends_at + timedelta(days=3)) == 0
    order.refresh_from_db()
    assert order.status == OrderStatus.DISPUTED
    assert available(order) == 0
    assert ledger_problems() == []


def test_release_in_batches_completes_every_due_order(run_on_commit, no_reserve):
    orders = [delivered(run_on_commit) for _ in range(5)]
    later = max(o.inspection_ends_at for o in orders)
    assert services.orders_release_due(now=later, batch=2) == 5
    assert set(Order.objects.values_list("status", flat=True)) == {OrderStatus.COMPLETED}
    assert available(orders[0]) == 9500
    assert ledger_problems() == []


def test_a_batch_that_meets_a_resolved_hold_falls_back_to_one_by_one(run_on_commit, no_reserve):
    first, second = delivered(run_on_commit), delivered(run_on_commit)
    # A hold already posted (as if a crashed run had got that far): the bulk insert hits the
    # "resolves once" constraint, the batch rolls back and each order is released exactly once.
    services.hold_release(order=first, now=timezone.now())
    now = max(first.inspection_ends_at, second.inspection_ends_at)
    assert services.orders_release_due(now=now) == 2
    assert Transfer.objects.filter(order=first, kind="post_pending").count() == 2
    assert ledger_problems() == []


def test_unpaid_order_expires_when_the_clock_passes_its_window(run_on_commit):
    product = factories.product_create(stock=2)
    placed = factories.order_place(product=product, quantity=2)
    assert services.orders_expire_due(now=placed.order.expires_at - timedelta(seconds=1)) == 0
    assert services.orders_expire_due(now=placed.order.expires_at) == 1
    placed.order.refresh_from_db()
    assert placed.order.status == OrderStatus.EXPIRED
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 2


def test_late_payment_with_stock_still_delivers(run_on_commit):
    product = factories.product_create(stock=1)
    placed = factories.order_place(product=product)
    services.orders_expire_due(now=placed.order.expires_at)
    with run_on_commit():
        factories.pay(placed.order)
    placed.order.refresh_from_db()
    assert placed.order.status == OrderStatus.DELIVERED
    assert ledger_problems() == []


def test_late_payment_without_stock_is_refunded_through_the_gateway(run_on_commit):
    product = factories.product_create(stock=1)
    late = factories.order_place(product=product)
    services.orders_expire_due(now=late.order.expires_at)
    with run_on_commit():
        factories.order_delivered(product=product)  # someone else buys the last key meanwhile
        factories.pay(late.order)
    late.order.refresh_from_db()
    assert late.order.status == OrderStatus.REFUNDED
    refund = Refund.objects.get(order=late.order)
    assert refund.status == RefundStatus.SUCCEEDED
    assert refund.gateway_refund_id.startswith("sbr_")
    assert refund.amount == late.order.amount
    assert account(AccountKind.BUYER_REFUNDS_PAYABLE, late.order, merchant=False).credit_balance == 0
    assert late.order.transfers.filter(code="refund_paid").count() == 1
    assert ledger_problems() == []


# --- refunds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "key_status"),
    [(KeyDisposition.RESTOCK, CardKeyStatus.AVAILABLE), (KeyDisposition.REVOKE, CardKeyStatus.REVOKED)],
)
def test_staff_full_refund(run_on_commit, disposition, key_status):
    order = delivered(run_on_commit, quantity=2)
    keys = list(CardKey.objects.filter(order=order).values_list("pk", flat=True))
    staff = factories.user_create(is_staff=True)
    with run_on_commit():
        refund = refunds.order_refund(order_pk=order.pk, now=timezone.now(), disposition=disposition, actor=staff)
    order.refresh_from_db()
    refund.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert refund.status == RefundStatus.SUCCEEDED and refund.amount == 20000 and refund.key_count == 2
    assert set(CardKey.objects.filter(pk__in=keys).values_list("status", flat=True)) == {key_status}
    assert account(AccountKind.ESCROW, order, merchant=False).credit_balance == 0
    assert available(order) == 0
    assert account(AccountKind.MERCHANT_AVAILABLE, order).credits_pending == 0
    clearing = account(AccountKind.GATEWAY_CLEARING, order, merchant=False)
    assert clearing.debits_posted - clearing.credits_posted == 0
    assert ledger_problems() == []


def test_refund_of_a_paid_order_before_delivery_returns_reserved_keys(django_capture_on_commit_callbacks):
    product = factories.product_create(stock=2)
    placed = factories.order_place(product=product)
    with django_capture_on_commit_callbacks(execute=False):  # delivery does not run
        factories.pay(placed.order)
    refund = refunds.order_refund(order_pk=placed.order.pk, now=timezone.now(), disposition=KeyDisposition.REVOKE)
    assert refund.key_count == 1
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 2
    assert ledger_problems() == []


def test_merchant_partial_refund_of_some_keys(run_on_commit, no_reserve):
    order = delivered(run_on_commit, quantity=3, price=333)  # paid 999
    keys = list(CardKey.objects.filter(order=order).order_by("pk").values_list("pk", flat=True))
    merchant = Merchant.objects.get(pk=order.merchant_id)
    with run_on_commit():
        refund = refunds.order_refund(
            order_pk=order.pk,
            now=timezone.now(),
            key_pks=[keys[0]],
            merchant=merchant,
            reason="merchant",
            actor=merchant.user,
        )
    order.refresh_from_db()
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    assert refund.amount == 333
    kept = 666
    fee = percent_of(kept, merchant.fee_percent or 5)  # 33.3 → 33
    assert fee == 33
    assert available(order) == kept - fee
    assert account(AccountKind.PLATFORM_FEES, order, merchant=False).credit_balance == fee
    assert CardKey.objects.get(pk=keys[0]).status == CardKeyStatus.AVAILABLE
    assert CardKey.objects.filter(pk__in=keys[1:], status=CardKeyStatus.SOLD).count() == 2
    assert ledger_problems() == []


def test_merchant_cannot_refund_another_merchants_order(run_on_commit):
    order = delivered(run_on_commit)
    other = factories.merchant_create(name="Other")
    transfers = Transfer.objects.count()
    with pytest.raises(refunds.RefundRefused) as error:
        refunds.order_refund(order_pk=order.pk, now=timezone.now(), merchant=other)
    assert error.value.code == "not_found"
    assert Transfer.objects.count() == transfers
    assert Refund.objects.count() == 0


def test_second_refund_is_refused_and_a_refund_after_release_takes_the_share_back(run_on_commit, no_reserve):
    order = delivered(run_on_commit)
    with run_on_commit():
        refunds.order_refund(order_pk=order.pk, now=timezone.now())
    transfers = Transfer.objects.count()
    with pytest.raises(refunds.RefundRefused):
        refunds.order_refund(order_pk=order.pk, now=timezone.now())
    assert Transfer.objects.count() == transfers
    released = delivered(run_on_commit)
    services.order_confirm_receipt(order=released, now=timezone.now())
    # Issue 13: after release the money comes back from the merchant's share and the fee (clawbacks.py).
    with run_on_commit():
        refund = refunds.order_refund(order_pk=released.pk, now=timezone.now())
    assert refund.clawback.amount == released.amount
    transfers = Transfer.objects.count()
    with pytest.raises(refunds.RefundRefused) as error:
        refunds.order_refund(order_pk=released.pk, now=timezone.now())
    assert error.value.code == "bad_state"
    assert Transfer.objects.count() == transfers
    assert ledger_problems() == []


def test_refund_webhook_replay_and_tampered_amount(run_on_commit, django_capture_on_commit_callbacks):
    order = delivered(run_on_commit)
    with django_capture_on_commit_callbacks(execute=False):
        refund = refunds.order_refund(order_pk=order.pk, now=timezone.now())
    refund = refunds.refund_submit(refund_pk=refund.pk, now=timezone.now())
    payment = order.payments.get()

    from escrow.gateways.sandbox.gateway import SIGNATURE_HEADER, event_body, signature_header

    def send(amount):
        body = event_body(
            event_type="refund.succeeded",
            payment_id=payment.payment_id,
            amount=amount,
            currency="CNY",
            event_id=f"evt_{refund.gateway_refund_id}:{amount}",
            refund_id=refund.gateway_refund_id,
        )
        import time

        return factories.webhook_post(
            factories.Client(), body, {SIGNATURE_HEADER: signature_header(body=body, timestamp=int(time.time()))}
        )

    assert send("99.00").status_code == 400  # wrong amount: nothing settles
    refund.refresh_from_db()
    assert refund.status == RefundStatus.REQUESTED
    assert send("100.00").status_code == 200
    assert send("100.00").json() == {"result": "duplicate"}
    refund.refresh_from_db()
    assert refund.status == RefundStatus.SUCCEEDED
    assert order.transfers.filter(code="refund_paid").count() == 1
    assert ledger_problems() == []


# --- rolling reserve and fees ---------------------------------------------------------------------------


def test_young_merchant_reserve_is_held_then_released(run_on_commit, settings):
    settings.RESERVE_PERCENT = 10
    settings.RESERVE_DAYS = 14
    order = delivered(run_on_commit, price=10001)  # share 9501 → reserve 950.1 → 950
    now = order.inspection_ends_at
    services.orders_release_due(now=now)
    reserve = account(AccountKind.MERCHANT_RESERVE, order)
    assert reserve.credit_balance == 950
    assert available(order) == 9501 - 950
    hold = ReserveHold.objects.get(order=order)
    assert hold.release_at == now + timedelta(days=14)
    assert ledger_problems() == []

    assert services.reserves_release_due(now=now + timedelta(days=14) - timedelta(seconds=1)) == 0
    assert services.reserves_release_due(now=now + timedelta(days=14)) == 1
    assert services.reserves_release_due(now=now + timedelta(days=20)) == 0
    assert account(AccountKind.MERCHANT_RESERVE, order).credit_balance == 0
    assert available(order) == 9501
    assert ledger_problems() == []


def test_reserve_also_on_buyer_confirmation(run_on_commit, settings):
    settings.RESERVE_PERCENT = 20
    order = delivered(run_on_commit)
    services.order_confirm_receipt(order=order, now=timezone.now())
    assert account(AccountKind.MERCHANT_RESERVE, order).credit_balance == percent_of(9500, 20)
    assert ledger_problems() == []


def test_established_merchant_has_no_reserve(run_on_commit, settings):
    settings.RESERVE_PERCENT = 10
    merchant = factories.merchant_create()
    Merchant.objects.filter(pk=merchant.pk).update(created_at=timezone.now() - timedelta(days=91))
    merchant.refresh_from_db()
    order = delivered(run_on_commit, merchant=merchant)
    services.orders_release_due(now=order.inspection_ends_at)
    assert account(AccountKind.MERCHANT_RESERVE, order).credit_balance == 0
    assert available(order) == 9500
    assert ReserveHold.objects.count() == 0


@pytest.mark.parametrize(("price", "percent", "fee"), [(10, "5", 1), (9, "5", 0), (1999, "2.50", 50), (101, "0", 0)])
def test_fee_rounds_half_up_per_merchant_rate(run_on_commit, no_reserve, price, percent, fee):
    merchant = factories.merchant_create(fee_percent=percent)
    order = delivered(run_on_commit, price=price, merchant=merchant)
    services.orders_release_due(now=order.inspection_ends_at)
    assert account(AccountKind.PLATFORM_FEES, order, merchant=False).credit_balance == fee
    assert available(order) == price - fee
    assert ledger_problems() == []
