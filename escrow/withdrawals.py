"""Withdrawals: a merchant's available money leaves, with a fresh second factor and staff approval.

A request moves the amount at once as a pending transfer merchant_available → payouts, under a lock
on the merchant's available account, so two requests at the same moment can never overdraw it. Staff
approve (the pending transfer is posted: paid out) or reject (voided: the money is available again).
"""

import logging
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import TwoFactorInvalid, TwoFactorRequired, audit_record, otp_fresh_code_check
from core.errors import Refused
from core.mail import mail_send
from core.money import display
from escrow import ledger
from escrow.locks import ledger_accounts_lock, withdrawal_lock
from escrow.models import (
    WITHDRAWAL_TRANSITIONS,
    AccountKind,
    PayoutAccount,
    Transfer,
    Withdrawal,
    WithdrawalStatus,
)
from shop.models import Merchant

logger = logging.getLogger(__name__)


class WithdrawalRefused(Refused):
    """A withdrawal that cannot go ahead; nothing moved. The message is for people."""


def _fresh_code_check(*, user: User, code: str, what: str) -> None:
    """A fresh second factor for a money or security change, or `WithdrawalRefused` (nothing changed)."""
    try:
        otp_fresh_code_check(user=user, code=code)  # commits on its own: a failure must count
    except TwoFactorRequired:
        raise WithdrawalRefused(
            _("%(what)s needs two-factor authentication. Set it up on your security page: %(url)s")
            % {"what": what, "url": reverse("security:overview")},
            code="two_factor_required",
        ) from None
    except TwoFactorInvalid:
        raise WithdrawalRefused(
            _("That code is wrong or was already used. Enter a fresh code from your app."), code="bad_code"
        ) from None


def payout_account_add(
    *,
    merchant: Merchant,
    label: str,
    holder_name: str,
    account_number: str,
    provider: str,
    code: str,
    actor: User,
    now: datetime,
) -> PayoutAccount:
    """Save an account the merchant can withdraw to, after a fresh second factor from `actor`.

    Refused (`WithdrawalRefused`, nothing saved) without a confirmed TOTP device or with a wrong or
    reused code: whoever holds only a stolen session cannot send the merchant's money elsewhere.
    """
    _fresh_code_check(user=actor, code=code, what=_("Adding a payout account"))
    return payout_account_add_unchecked(
        merchant=merchant,
        label=label,
        holder_name=holder_name,
        account_number=account_number,
        provider=provider,
        actor=actor,
        now=now,
    )


@transaction.atomic
def payout_account_add_unchecked(
    *,
    merchant: Merchant,
    label: str,
    holder_name: str,
    account_number: str,
    provider: str,
    actor: User,
    now: datetime,
) -> PayoutAccount:
    """Save an account the merchant can withdraw to WITHOUT a fresh second factor.

    For `payout_account_add` (which checked one), demo data and tests; a request must never reach it.
    """
    account = PayoutAccount.objects.create(
        merchant=merchant,
        label=label.strip(),
        holder_name=holder_name.strip(),
        provider=provider.strip(),
        created_at=now,
    )
    account.number_seal(account_number.strip())
    account.save(update_fields=["number_sealed", "number_last4"])
    audit_record(action=AuditAction.PAYOUT_ACCOUNT_ADDED, subject=account, now=now, actor=actor)
    return account


def available_balance(*, merchant: Merchant, currency: str) -> int:
    return ledger.available_of(ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, currency, merchant.pk))


def withdrawal_request(
    *,
    merchant: Merchant,
    user: User,
    payout_account_pk: int,
    amount: int,
    currency: str,
    code: str,
    now: datetime,
) -> Withdrawal:
    """Ask to withdraw `amount` to a saved payout account.

    Refused (raising `WithdrawalRefused`, nothing moved) below the minimum, above what is available,
    without a confirmed TOTP device (code "two_factor_required") or with a wrong or reused code.
    """
    if amount < settings.WITHDRAWAL_MINIMUM:
        raise WithdrawalRefused(
            _("The smallest withdrawal is %(min)s.") % {"min": display(settings.WITHDRAWAL_MINIMUM, currency)},
            code="below_minimum",
        )
    payout_account = PayoutAccount.objects.filter(pk=payout_account_pk, merchant=merchant).first()
    if payout_account is None:
        raise WithdrawalRefused(_("Choose one of your saved payout accounts."), code="no_payout_account")
    available = available_balance(merchant=merchant, currency=currency)
    if available < 0:
        raise WithdrawalRefused(
            _(
                "Your balance is negative (%(balance)s) after a chargeback or a refund of a completed order: "
                "withdrawals wait until later sales cover it."
            )
            % {"balance": display(available, currency)},
            code="negative_balance",
        )
    if amount > available:
        raise WithdrawalRefused(_("That is more than your available balance."), code="insufficient_funds")
    _fresh_code_check(user=user, code=code, what=_("Withdrawing"))
    return _withdrawal_hold(
        merchant=merchant, user=user, payout_account=payout_account, amount=amount, currency=currency, now=now
    )


@transaction.atomic
def _withdrawal_hold(
    *, merchant: Merchant, user: User, payout_account: PayoutAccount, amount: int, currency: str, now: datetime
) -> Withdrawal:
    available = ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, currency, merchant.pk)
    payouts = ledger.platform_account(AccountKind.PAYOUTS, currency)
    # The balance is read and spent under these locks (both rows, in the one order every path uses).
    available = ledger_accounts_lock([available.pk, payouts.pk])[available.pk]
    if amount > ledger.available_of(available):
        raise WithdrawalRefused(_("That is more than your available balance."), code="insufficient_funds")
    withdrawal = Withdrawal.objects.create(
        merchant=merchant,
        payout_account=payout_account,
        amount=amount,
        currency=currency,
        requested_by=user,
        requested_at=now,
    )
    ledger.transfer(
        transfer_id=f"withdrawal:{withdrawal.pk}",
        debit=available,
        credit=payouts,
        amount=amount,
        code="withdrawal",
        now=now,
        pending=True,
    )
    audit_record(
        action=AuditAction.WITHDRAWAL_REQUESTED, subject=withdrawal, now=now, actor=user, data={"amount": amount}
    )
    from escrow.tasks import withdrawal_requested_notify_task

    transaction.on_commit(lambda: withdrawal_requested_notify_task.delay(withdrawal_pk=withdrawal.pk))
    logger.info("escrow.withdrawal_requested", extra={"withdrawal": withdrawal.pk, "merchant": merchant.pk})
    return withdrawal


def withdrawal_requested_notify(*, withdrawal_pk: int) -> None:
    withdrawal = Withdrawal.objects.select_related("merchant").get(pk=withdrawal_pk)
    staff = list(User.objects.filter(is_staff=True, is_active=True).exclude(email="").values_list("email", flat=True))
    if staff:
        mail_send(
            event="withdrawal.requested",
            subject=_("Withdrawal %(pk)s waits for approval") % {"pk": withdrawal.pk},
            body=_("%(merchant)s asks to withdraw %(amount)s.")
            % {"merchant": withdrawal.merchant.name, "amount": display(withdrawal.amount, withdrawal.currency)},
            to=staff,
        )


def _pending_of(withdrawal: Withdrawal) -> Transfer:
    """The withdrawal's pending transfer, with both its accounts locked (in the one order)."""
    pending = Transfer.objects.get(transfer_id=f"withdrawal:{withdrawal.pk}")
    ledger_accounts_lock([pending.debit_account_id, pending.credit_account_id])
    return pending


@transaction.atomic(durable=True)
def withdrawal_approve(*, withdrawal_pk: int, staff: User, payout_reference: str, now: datetime) -> Withdrawal:
    """Staff paid the withdrawal out: the pending transfer posts and the withdrawal is paid, once.

    `payout_reference` is the bank's or wallet's reference of the transfer staff made; without one
    the approval is refused (`WithdrawalRefused`, code "payout_reference_required", nothing changed).
    """
    payout_reference = payout_reference.strip()
    if not payout_reference:
        raise WithdrawalRefused(
            _("Enter the reference of the payment you made to the merchant."), code="payout_reference_required"
        )
    withdrawal = withdrawal_lock(withdrawal_pk)
    WITHDRAWAL_TRANSITIONS.apply(
        model=Withdrawal,
        pk=withdrawal.pk,
        to=WithdrawalStatus.PAID,
        decided_by=staff,
        decided_at=now,
        payout_reference=payout_reference[:128],
    )
    ledger.pending_post(transfer_id=f"withdrawal:{withdrawal.pk}:post", pending=_pending_of(withdrawal), now=now)
    audit_record(
        action=AuditAction.WITHDRAWAL_PAID,
        subject=withdrawal,
        now=now,
        actor=staff,
        data={
            "amount": withdrawal.amount,
            "currency": withdrawal.currency,
            "payout_account": withdrawal.payout_account_id,
            "payout_reference": payout_reference[:128],
        },
    )
    withdrawal.refresh_from_db()
    return withdrawal


@transaction.atomic(durable=True)
def withdrawal_reject(*, withdrawal_pk: int, staff: User, now: datetime, note: str = "") -> Withdrawal:
    """Staff reject: the pending transfer is voided and the amount is available again."""
    withdrawal = withdrawal_lock(withdrawal_pk)
    WITHDRAWAL_TRANSITIONS.apply(
        model=Withdrawal,
        pk=withdrawal.pk,
        to=WithdrawalStatus.REJECTED,
        decided_by=staff,
        decided_at=now,
        note=note[:200],
    )
    ledger.pending_void(transfer_id=f"withdrawal:{withdrawal.pk}:void", pending=_pending_of(withdrawal), now=now)
    audit_record(action=AuditAction.WITHDRAWAL_REJECTED, subject=withdrawal, now=now, actor=staff, data={"note": note})
    withdrawal.refresh_from_db()
    return withdrawal
