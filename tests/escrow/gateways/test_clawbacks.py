"""Money taken back after release: from available, then the reserve, then below zero (which blocks
withdrawals and is shown to the merchant); every path leaves `verify_ledger` clean."""

from datetime import timedelta

import pytest
from django.utils import timezone

from escrow import ledger, refunds, services, withdrawals
from escrow.ledger_checks import ledger_problems
from escrow.models import (
    AccountKind,
    Clawback,
    ClawbackKind,
    Order,
    OrderStatus,
    RefundStatus,
    ReserveHold,
    Transfer,
)
from shop.models import Merchant
from tests import factories
from tests.escrow.gateways.conftest import place
from tests.escrow.gateways.test_stripe import dispute_created, send, session_completed

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("real_gateways")]


def available(merchant) -> int:
    return ledger.available_of(ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, "CNY", merchant.pk))


def reserve(merchant) -> int:
    return ledger.merchant_account(AccountKind.MERCHANT_RESERVE, "CNY", merchant.pk).credit_balance


def completed_stripe_order(run_on_commit, merchant, *, intent: str):
    placed = place(gateway="stripe", merchant=merchant)
    event = session_completed(placed.payment, event_id=f"evt_{intent}")
    event["data"]["object"]["payment_intent"] = intent
    with run_on_commit():
        assert send(event).json() == {"result": "processed"}
    services.order_confirm_receipt(order=Order.objects.get(pk=placed.order.pk), now=timezone.now())
    return placed.order


def chargeback(intent: str, amount: int = 1500):
    event = dispute_created(amount=amount, event_id=f"evt_dp_{intent}", dispute_id=f"dp_{intent}")
    event["data"]["object"]["payment_intent"] = intent
    return send(event)


@pytest.fixture
def established_merchant():
    merchant = factories.merchant_create()
    Merchant.objects.filter(pk=merchant.pk).update(created_at=timezone.now() - timedelta(days=365))  # no reserve
    merchant.refresh_from_db()
    return merchant


def test_taken_from_available_first(run_on_commit, established_merchant):
    merchant = established_merchant
    completed_stripe_order(run_on_commit, merchant, intent="pi_a")
    completed_stripe_order(run_on_commit, merchant, intent="pi_b")
    assert available(merchant) == 2 * 1425  # 1500 less the 5% fee, twice
    fees_before = ledger.platform_account(AccountKind.PLATFORM_FEES, "CNY").credit_balance

    assert chargeback("pi_a").status_code == 200

    clawback = Clawback.objects.get()
    assert (clawback.share, clawback.fee, clawback.from_reserve) == (1425, 75, 0)
    assert available(merchant) == 1425
    assert ledger.platform_account(AccountKind.PLATFORM_FEES, "CNY").credit_balance == fees_before - 75
    assert ledger_problems() == []


def test_then_the_reserve_then_below_zero_which_blocks_withdrawals(run_on_commit, client):
    merchant = factories.merchant_create()  # young: 10% of each release waits in the reserve
    order = completed_stripe_order(run_on_commit, merchant, intent="pi_young")
    assert (available(merchant), reserve(merchant)) == (1282, 143)
    payout = factories.payout_account_create(merchant=merchant)
    device = factories.totp_device_create(user=merchant.user)
    withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=payout.pk,
        amount=1000,
        currency="CNY",
        code=factories.totp_code(device),
        now=timezone.now(),
    )
    assert available(merchant) == 282

    assert chargeback("pi_young").json() == {"result": "processed"}

    clawback = Clawback.objects.get()
    assert (clawback.share, clawback.from_reserve) == (1425, 143)
    assert reserve(merchant) == 0
    assert ReserveHold.objects.get(order=order).released_at is not None
    assert available(merchant) == 282 + 143 - 1425 == -1000
    assert ledger_problems() == []

    with pytest.raises(withdrawals.WithdrawalRefused) as refused:
        withdrawals.withdrawal_request(
            merchant=merchant,
            user=merchant.user,
            payout_account_pk=payout.pk,
            amount=1000,
            currency="CNY",
            code=factories.totp_code(device, offset_steps=1),
            now=timezone.now(),
        )
    assert refused.value.code == "negative_balance"

    factories.login_verified(client, merchant.user, device=device)
    page = client.get("/merchant/money/")
    assert 'data-testid="negative-balance"' in page.text
    assert "-¥10.00 CNY" in page.text


def test_a_refund_of_a_completed_order_takes_the_share_back_and_pays_the_buyer(run_on_commit, established_merchant):
    product = factories.product_create(stock=2, price=1500, merchant=established_merchant)
    with run_on_commit():
        order = factories.order_delivered(product=product)  # through the sandbox
    services.order_confirm_receipt(order=order, now=timezone.now())
    with run_on_commit():  # the sandbox pays the refund and confirms it by its signed webhook
        refund = refunds.order_refund(order_pk=order.pk, now=timezone.now(), reason="staff")
    refund.refresh_from_db()
    assert refund.status == RefundStatus.SUCCEEDED
    clawback = Clawback.objects.get()
    assert (clawback.kind, clawback.refund_id, clawback.amount) == (ClawbackKind.REFUND, refund.pk, 1500)
    assert Order.objects.get(pk=order.pk).status == OrderStatus.REFUNDED
    assert available(established_merchant) == 0
    assert Transfer.objects.get(transfer_id=f"refund:{refund.pk}").debit_account.kind == AccountKind.ESCROW
    with pytest.raises(refunds.RefundRefused):
        refunds.order_refund(order_pk=order.pk, now=timezone.now())
    assert ledger_problems() == []


def test_a_chargeback_for_more_than_is_left_is_rejected_and_books_nothing(run_on_commit, established_merchant):
    completed_stripe_order(run_on_commit, established_merchant, intent="pi_big")
    assert chargeback("pi_big", amount=1501).status_code == 400
    assert Clawback.objects.count() == 0
    assert ledger_problems() == []


def test_verify_ledger_notices_a_clawback_that_does_not_add_up(run_on_commit, established_merchant):
    completed_stripe_order(run_on_commit, established_merchant, intent="pi_x")
    chargeback("pi_x")
    Clawback.objects.update(share=1400)  # the record no longer matches what the ledger booked
    problems = ledger_problems()
    assert any("share 1400 + fee 75 != 1500" in p for p in problems)
    assert any("share 1400 recorded, 1425 booked" in p for p in problems)


def test_verify_ledger_flags_a_negative_balance_no_clawback_explains(run_on_commit, established_merchant):
    merchant = established_merchant
    completed_stripe_order(run_on_commit, merchant, intent="pi_y")
    device = factories.totp_device_create(user=merchant.user)
    withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=factories.payout_account_create(merchant=merchant).pk,
        amount=1000,
        currency="CNY",
        code=factories.totp_code(device),
        now=timezone.now(),
    )
    chargeback("pi_y")
    assert available(merchant) == -1000
    assert ledger_problems() == []
    Clawback.objects.update(merchant=factories.merchant_create())  # the debt no longer explained by their clawbacks
    assert any("available balance is -1000, below zero" in p for p in ledger_problems())
