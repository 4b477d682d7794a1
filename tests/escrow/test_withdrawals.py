"""Withdrawals: a fresh second factor, the minimum, never more than available, staff decide."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.services import totp_enrol_confirm, totp_enrol_start
from escrow import ledger, services, withdrawals
from escrow.ledger_checks import ledger_problems
from escrow.models import AccountKind, PayoutAccount, Transfer, Withdrawal, WithdrawalStatus
from shop.crypto import CardKeyCryptoError
from tests import factories
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db

DAYS_2 = timedelta(days=2)


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.RESERVE_PERCENT = 0
    settings.WITHDRAWAL_MINIMUM = 1000


def merchant_with_balance(run_on_commit, *, price=10000):
    product = factories.product_create(stock=3, price=price)
    with run_on_commit():
        order = factories.order_delivered(product=product)
    services.order_confirm_receipt(order=order, now=timezone.now())
    merchant = product.merchant
    payout = factories.payout_account_create(merchant=merchant)
    return merchant, payout


def available(merchant):
    return withdrawals.available_balance(merchant=merchant, currency="CNY")


def request(merchant, payout, amount, code):
    return withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=payout.pk,
        amount=amount,
        currency="CNY",
        code=code,
        now=timezone.now(),
    )


def test_no_device_is_refused_with_a_link_to_enrolment(run_on_commit):
    merchant, payout = merchant_with_balance(run_on_commit)
    with pytest.raises(withdrawals.WithdrawalRefused) as error:
        request(merchant, payout, 5000, "123456")
    assert error.value.code == "two_factor_required"
    assert "/account/security/" in str(error.value)
    assert Withdrawal.objects.count() == 0
    assert available(merchant) == 9500


def test_wrong_and_reused_codes_are_refused_and_nothing_moves(run_on_commit):
    merchant, payout = merchant_with_balance(run_on_commit)
    device = factories.totp_device_create(user=merchant.user)
    good = factories.totp_code(device)
    wrong = f"{(int(good) + 1) % 1000000:06d}"
    transfers = Transfer.objects.count()
    with pytest.raises(withdrawals.WithdrawalRefused) as error:
        request(merchant, payout, 5000, wrong)
    assert error.value.code == "bad_code"
    assert Transfer.objects.count() == transfers and available(merchant) == 9500

    device.refresh_from_db()
    device.throttle_reset()  # the failure above throttles the device for a second
    withdrawal = request(merchant, payout, 3000, good)
    assert withdrawal.status == WithdrawalStatus.REQUESTED
    assert available(merchant) == 6500

    with pytest.raises(withdrawals.WithdrawalRefused) as error:
        request(merchant, payout, 3000, good)  # the same code again: django-otp's last_t refuses it
    assert error.value.code == "bad_code"
    assert Withdrawal.objects.count() == 1 and available(merchant) == 6500
    assert ledger_problems() == []


def test_minimum_and_more_than_available_are_refused(run_on_commit):
    merchant, payout = merchant_with_balance(run_on_commit)
    device = factories.totp_device_create(user=merchant.user)
    for amount, code in ((999, "below_minimum"), (9501, "insufficient_funds")):
        with pytest.raises(withdrawals.WithdrawalRefused) as error:
            request(merchant, payout, amount, factories.totp_code(device))
        assert error.value.code == code
    assert Withdrawal.objects.count() == 0 and available(merchant) == 9500


def test_someone_elses_payout_account_is_refused(run_on_commit):
    merchant, _ = merchant_with_balance(run_on_commit)
    _, other_payout = merchant_with_balance(run_on_commit)
    device = factories.totp_device_create(user=merchant.user)
    with pytest.raises(withdrawals.WithdrawalRefused) as error:
        request(merchant, other_payout, 2000, factories.totp_code(device))
    assert error.value.code == "no_payout_account"


def test_backup_code_works_once(run_on_commit):
    merchant, payout = merchant_with_balance(run_on_commit)
    device = totp_enrol_start(user=merchant.user, now=timezone.now())
    codes = totp_enrol_confirm(user=merchant.user, code=factories.totp_code(device), now=timezone.now())
    request(merchant, payout, 2000, codes[0])
    with pytest.raises(withdrawals.WithdrawalRefused):
        request(merchant, payout, 2000, codes[0])
    assert Withdrawal.objects.count() == 1


def test_staff_approve_pays_and_reject_returns_the_money(run_on_commit):
    merchant, payout = merchant_with_balance(run_on_commit)
    device = totp_enrol_start(user=merchant.user, now=timezone.now())
    # Enrolled two days ago: a withdrawal within a day of a 2FA change is held for review (risk).
    codes = totp_enrol_confirm(user=merchant.user, code=factories.totp_code(device), now=timezone.now() - DAYS_2)
    staff = factories.user_create(is_staff=True)
    first = request(merchant, payout, 4000, codes[0])
    second = request(merchant, payout, 3000, codes[1])
    assert available(merchant) == 2500

    withdrawals.withdrawal_approve(
        withdrawal_pk=first.pk, staff=staff, payout_reference="ICBC-20261130-0001", now=timezone.now()
    )
    withdrawals.withdrawal_reject(withdrawal_pk=second.pk, staff=staff, now=timezone.now(), note="wrong account")
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (WithdrawalStatus.PAID, WithdrawalStatus.REJECTED)
    assert available(merchant) == 5500
    payouts = ledger.platform_account(AccountKind.PAYOUTS, "CNY")
    assert (payouts.credit_balance, payouts.credits_pending) == (4000, 0)
    from core.transitions import StateError

    with pytest.raises(StateError):
        withdrawals.withdrawal_reject(withdrawal_pk=first.pk, staff=staff, now=timezone.now())
    assert available(merchant) == 5500
    assert ledger_problems() == []


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_withdrawals_of_80_percent_exactly_one_succeeds(run_on_commit):
    merchant, payout = merchant_with_balance(run_on_commit)  # 9500 available
    device = totp_enrol_start(user=merchant.user, now=timezone.now())
    backup = totp_enrol_confirm(user=merchant.user, code=factories.totp_code(device), now=timezone.now() - DAYS_2)
    # Two different valid factors, so that only the balance lock can decide between them.
    codes = [factories.totp_code(device, offset_steps=1), backup[0]]
    amount = 9500 * 80 // 100
    barrier = threading.Barrier(2)
    results: list[str] = []

    def attempt(code):
        try:
            barrier.wait()
            request(merchant, payout, amount, code)
            results.append("ok")
        except withdrawals.WithdrawalRefused as error:
            results.append(error.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(code,)) for code in codes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["insufficient_funds", "ok"]
    assert Withdrawal.objects.count() == 1
    assert available(merchant) == 9500 - amount
    assert ledger_problems() == []


def test_a_payout_account_number_is_stored_sealed_shown_masked_and_read_by_one_accessor():
    merchant = factories.merchant_create()
    account = factories.payout_account_create(merchant=merchant)  # 6222000011112222
    other = factories.payout_account_create(merchant=merchant)
    stored = PayoutAccount.objects.get(pk=account.pk)

    assert b"6222000011112222" not in bytes(stored.number_sealed) and stored.number_last4 == "2222"
    assert str(stored) == "Main (ICBC …2222)"
    assert stored.number_plaintext() == "6222000011112222"
    PayoutAccount.objects.filter(pk=other.pk).update(number_sealed=stored.number_sealed)  # copied onto another row
    with pytest.raises(CardKeyCryptoError):
        PayoutAccount.objects.get(pk=other.pk).number_plaintext()
