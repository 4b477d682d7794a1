"""Two money paths that lock the same ledger accounts never deadlock (django-oscar's stock-locking test,
for the ledger).

Each test makes two real transactions collide in the one order that deadlocked before every path took
its ledger rows through `escrow.locks.ledger_accounts_lock` (all at once, in primary-key order): a
third transaction holds the contested account row, the first path is started and left waiting on it,
then the second path is started and left waiting too, and only then is the row let go. Before the fix
PostgreSQL aborted one of them with `DeadlockDetected`; now both finish and the ledger still adds up.
The account that must be the smallest (the contested one) is created first, as happens in production
whenever a platform account is older than a merchant's.
"""

import functools
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.services import backup_codes_issue_unchecked
from escrow import ledger, refunds, releases, services, withdrawals
from escrow.ledger_checks import ledger_problems
from escrow.models import AccountKind, LedgerAccount, Order, OrderStatus, Withdrawal, WithdrawalStatus
from tests import factories
from tests.conftest import requires_postgres
from tests.locks import wait_until_blocked

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.WITHDRAWAL_MINIMUM = 1000
    settings.RESERVE_PERCENT = 0


def collide(*, contested: LedgerAccount, first, second) -> list:
    """Run `first` then `second` in their own threads and transactions, both queued behind a lock on
    `contested`, then release it. Returns what each returned or raised."""
    results: list = [None, None]

    def runner(index: int, work) -> None:
        try:
            results[index] = work()
        except Exception as error:  # the test inspects what each path met
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i, work)) for i, work in enumerate((first, second))]
    with transaction.atomic():
        LedgerAccount.objects.select_for_update().get(pk=contested.pk)
        for count, thread in enumerate(threads, start=1):
            thread.start()
            wait_until_blocked(thread, count)
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def assert_no_errors(results: list) -> None:
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == [], f"a path failed: {errors!r}"
    assert ledger_problems() == []


def merchant_with_balance(*, orders: int = 2):
    product = factories.product_create(stock=orders + 4)
    for _ in range(orders):
        order = factories.order_delivered(product=product)
        services.order_confirm_receipt(order=order, now=timezone.now())
    merchant = product.merchant
    factories.totp_device_create(user=merchant.user)
    codes = backup_codes_issue_unchecked(user=merchant.user, count=5, now=timezone.now())
    return product, merchant, factories.payout_account_create(merchant=merchant), codes


def withdrawal_request(merchant, payout, code, amount=2000):
    return withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=payout.pk,
        amount=amount,
        currency="CNY",
        code=code,
        now=timezone.now(),
    )


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_withdrawal_request_and_staff_decision_never_deadlock(decision):
    payouts = ledger.platform_account(AccountKind.PAYOUTS, "CNY")  # older than the merchant's account
    _, merchant, payout, codes = merchant_with_balance()
    staff = factories.user_create(is_staff=True)
    pending = withdrawal_request(merchant, payout, codes[0])
    if decision == "approve":
        decide = functools.partial(withdrawals.withdrawal_approve, payout_reference="ICBC-0001")
    else:
        decide = withdrawals.withdrawal_reject

    results = collide(
        contested=payouts,
        first=lambda: decide(withdrawal_pk=pending.pk, staff=staff, now=timezone.now()),
        second=lambda: withdrawal_request(merchant, payout, codes[1]),
    )

    assert_no_errors(results)
    decided, requested = results
    assert decided.status == (WithdrawalStatus.PAID if decision == "approve" else WithdrawalStatus.REJECTED)
    assert Withdrawal.objects.get(pk=requested.pk).status == WithdrawalStatus.REQUESTED
    kept = 9500 * 2 - 2000 - (2000 if decision == "approve" else 0)
    assert withdrawals.available_balance(merchant=merchant, currency="CNY") == kept


def test_payment_and_refund_of_the_same_merchant_never_deadlock():
    fees = ledger.platform_account(AccountKind.PLATFORM_FEES, "CNY")  # older than escrow and the merchant's
    product = factories.product_create(stock=4)
    refunded = factories.order_delivered(product=product)
    paying = factories.order_place(product=product).order
    body, headers = factories.signed_webhook(payment=paying.payments.get())

    results = collide(
        contested=fees,
        first=lambda: services.webhook_receive(gateway_name="sandbox", body=body, headers=headers, now=timezone.now()),
        second=lambda: refunds.order_refund(order_pk=refunded.pk, now=timezone.now()),
    )

    assert_no_errors(results)
    assert Order.objects.get(pk=paying.pk).status == OrderStatus.DELIVERED
    assert Order.objects.get(pk=refunded.pk).status == OrderStatus.REFUNDED


def test_buyer_confirmation_and_lapsed_release_never_deadlock():
    fees = ledger.platform_account(AccountKind.PLATFORM_FEES, "CNY")
    product = factories.product_create(stock=4)
    confirmed = factories.order_delivered(product=product)
    lapsed = factories.order_delivered(product=product)
    later = timezone.now() + timedelta(days=30)

    results = collide(
        contested=fees,
        first=lambda: services.order_confirm_receipt(order=confirmed, now=timezone.now()),
        second=lambda: releases.order_release_lapsed(order_pk=lapsed.pk, now=later),
    )

    assert_no_errors(results)
    assert set(Order.objects.filter(pk__in=[confirmed.pk, lapsed.pk]).values_list("status", flat=True)) == {
        OrderStatus.COMPLETED
    }


def test_refund_and_lapsed_release_never_deadlock():
    fees = ledger.platform_account(AccountKind.PLATFORM_FEES, "CNY")
    product = factories.product_create(stock=4)
    refunded = factories.order_delivered(product=product)
    lapsed = factories.order_delivered(product=product)
    later = timezone.now() + timedelta(days=30)

    results = collide(
        contested=fees,
        first=lambda: refunds.order_refund(order_pk=refunded.pk, now=timezone.now()),
        second=lambda: releases.order_release_lapsed(order_pk=lapsed.pk, now=later),
    )

    assert_no_errors(results)
    assert Order.objects.get(pk=refunded.pk).status == OrderStatus.REFUNDED
    assert Order.objects.get(pk=lapsed.pk).status == OrderStatus.COMPLETED


def test_withdrawal_request_and_lapsed_release_never_deadlock():
    product, merchant, payout, codes = merchant_with_balance()
    lapsed = factories.order_delivered(product=product)
    available = ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, "CNY", merchant.pk)
    later = timezone.now() + timedelta(days=30)

    results = collide(
        contested=available,
        first=lambda: releases.order_release_lapsed(order_pk=lapsed.pk, now=later),
        second=lambda: withdrawal_request(merchant, payout, codes[0]),
    )

    assert_no_errors(results)
    assert Order.objects.get(pk=lapsed.pk).status == OrderStatus.COMPLETED
    assert results[1].status == WithdrawalStatus.REQUESTED
