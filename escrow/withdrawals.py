"""Withdrawals: a merchant's available money leaves, with a fresh second factor and staff approval.

A request moves the amount at once as a pending transfer merchant_available → payouts, under a lock
on the merchant's available account, so two requests at the same moment can never overdraw it. Staff
approve (the pending transfer is posted: paid out) or reject (voided: the money is available again).
"""

import dataclasses
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils.translation import gettext as _

import risk
from accounts.models import AuditAction, AuditEntry, User
from accounts.services import TwoFactorInvalid, TwoFactorRequired, audit_record, otp_fresh_code_check
from core.errors import Refused
from core.mail import mail_send
from core.money import display
from escrow import ledger, webhook_events
from escrow.locks import ledger_accounts_lock, withdrawal_lock
from escrow.models import (
    WITHDRAWAL_TRANSITIONS,
    AccountKind,
    PayoutAccount,
    Transfer,
    Withdrawal,
    WithdrawalStatus,
)
from risk.models import Decision
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
    risk_context: risk.RiskContext | None = None,
) -> PayoutAccount:
    """Save an account the merchant can withdraw to, after a fresh second factor from `actor`.

    Refused (`WithdrawalRefused`, nothing saved) without a confirmed TOTP device or with a wrong or
    reused code: whoever holds only a stolen session cannot send the merchant's money elsewhere.
    Assessed by the risk engine (`payout_account_change`): a block refuses it (`risk.RiskRefused`),
    a review (a new device or network, a fresh security change) saves it and alerts the merchant.
    """
    _fresh_code_check(user=actor, code=code, what=_("Adding a payout account"))
    decision = _risk_assess(
        event="payout_account_change",
        user=actor,
        merchant=merchant,
        context=risk_context,
        now=now,
        payout_account=account_number,
    )
    risk.decision_enforce(decision=decision, challenge_passed=True)  # the fresh code was the challenge
    if decision.outcome == risk.Outcome.REVIEW:
        _risk_alert_send(merchant=merchant, what=_("A payout account was added"), now=now)
    account = payout_account_add_unchecked(
        merchant=merchant,
        label=label,
        holder_name=holder_name,
        account_number=account_number,
        provider=provider,
        actor=actor,
        now=now,
    )
    risk.decision_subject_set(decision=decision, subject=("merchant", merchant.pk))
    return account


# Audit actions after which an account is "fresh from a security change" for a day.
SECURITY_ACTIONS = ("2fa.enrolled", "2fa.backup_codes_regenerated", "password.changed", "password.reset")


def _risk_assess(
    *,
    event: str,
    user: User,
    merchant: Merchant,
    context: risk.RiskContext | None,
    now: datetime,
    amount: int | None = None,
    currency: str = "",
    payout_account: str = "",
    extra: dict | None = None,
) -> Decision:
    """The risk engine's view of a money-out act: who (and from where, when the caller knows), how
    much, to which payout account, and when the account's password or second factor last changed."""
    changed = (
        AuditEntry.objects.filter(
            subject_type="accounts.user", subject_id=str(user.pk), action__in=SECURITY_ACTIONS, at__lte=now
        )
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    context = context or risk.RiskContext(actor_id=user.pk, actor_created_at=user.date_joined, email=user.email)
    context = dataclasses.replace(
        context,
        actor_id=user.pk,
        merchant_id=merchant.pk,
        amount=amount,
        currency=currency,
        payout_account=payout_account,
        security_changed_at=changed,
        extra={**context.extra, **(extra or {})},
    )
    return risk.assess(event=event, context=context, now=now)


def _risk_alert_send(*, merchant: Merchant, what: str, now: datetime) -> None:
    """Tell the merchant's owner, on commit, that a money change was held for a security review."""
    to = [merchant.user.email] if merchant.user.email else []
    if not to:
        return
    body = _(
        "%(what)s on your merchant account from a new device or network, or just after a security change. "
        "For your protection staff will review it before any money leaves. If this was not you, change your "
        "password and contact support at once."
    ) % {"what": what}
    transaction.on_commit(
        lambda: mail_send(
            event="risk.money_change_held", subject=_("Security review: %(what)s") % {"what": what}, body=body, to=to
        )
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
    risk_context: risk.RiskContext | None = None,
) -> Withdrawal:
    """Ask to withdraw `amount` to a saved payout account.

    Refused (raising `WithdrawalRefused`, nothing moved) below the minimum, above what is available,
    without a confirmed TOTP device (code "two_factor_required") or with a wrong or reused code.
    Assessed by the risk engine (`withdrawal`, with `risk_context` from the request when the caller has
    one): a block or a frozen account refuses it (`risk.RiskRefused`, nothing moved); a review (a new
    device or network, a password or second-factor change within a day) holds the money as usual but
    the withdrawal waits in `pending_review` for the review queue, and the merchant gets an alert.
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
    decision = _risk_assess(
        event="withdrawal",
        user=user,
        merchant=merchant,
        context=risk_context,
        now=now,
        amount=amount,
        currency=currency,
        payout_account=payout_account.number_plaintext(),
        extra={"payout_account_age_hours": (now - payout_account.created_at) / timedelta(hours=1)},
    )
    risk.decision_enforce(decision=decision, challenge_passed=True)  # the fresh code was the challenge
    held = decision.outcome == risk.Outcome.REVIEW
    withdrawal = _withdrawal_hold(
        merchant=merchant,
        user=user,
        payout_account=payout_account,
        amount=amount,
        currency=currency,
        now=now,
        status=WithdrawalStatus.PENDING_REVIEW if held else WithdrawalStatus.REQUESTED,
    )
    risk.decision_subject_set(decision=decision, subject=("withdrawal", withdrawal.pk))
    if held:
        risk.review_open(kind="withdrawal", subject_id=withdrawal.pk, email=user.email, decision=decision, now=now)
        _risk_alert_send(merchant=merchant, what=_("A withdrawal was requested"), now=now)
    return withdrawal


@transaction.atomic
def _withdrawal_hold(
    *,
    merchant: Merchant,
    user: User,
    payout_account: PayoutAccount,
    amount: int,
    currency: str,
    now: datetime,
    status: str = WithdrawalStatus.REQUESTED,
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
        status=status,
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
        action=AuditAction.WITHDRAWAL_REQUESTED
        if status == WithdrawalStatus.REQUESTED
        else AuditAction.WITHDRAWAL_HELD,
        subject=withdrawal,
        now=now,
        actor=user,
        data={"amount": amount},
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
    webhook_events.withdrawal_paid_emit(withdrawal=withdrawal, now=now)
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


# --- the review queue (risk): withdrawals the engine held -------------------------------------------


@transaction.atomic(durable=True)
def withdrawal_review_clear(*, withdrawal_pk: int, staff: User, now: datetime, note: str = "") -> Withdrawal:
    """Staff clear a withdrawal the risk engine held: pending_review → requested, where it waits for the
    payout like any other. Already cleared (or paid): returned as it is."""
    withdrawal = withdrawal_lock(withdrawal_pk)
    if withdrawal.status != WithdrawalStatus.PENDING_REVIEW:
        if withdrawal.status == WithdrawalStatus.REJECTED:
            raise WithdrawalRefused(_("This withdrawal was rejected."), code="bad_state")
        return withdrawal
    WITHDRAWAL_TRANSITIONS.apply(model=Withdrawal, pk=withdrawal.pk, to=WithdrawalStatus.REQUESTED, mirror=withdrawal)
    audit_record(
        action=AuditAction.WITHDRAWAL_REQUESTED, subject=withdrawal, now=now, actor=staff, data={"cleared": note[:200]}
    )
    return withdrawal


def withdrawal_review_item_approve(*, item, staff: User, note: str, now: datetime, payout_reference: str = "") -> None:
    """Approve from the review queue: cleared, and paid out at once when staff give the payout reference."""
    withdrawal = withdrawal_review_clear(withdrawal_pk=int(item.subject_id), staff=staff, now=now, note=note)
    if payout_reference and withdrawal.status == WithdrawalStatus.REQUESTED:
        withdrawal_approve(withdrawal_pk=withdrawal.pk, staff=staff, payout_reference=payout_reference, now=now)


def withdrawal_review_item_reject(*, item, staff: User, note: str, now: datetime, **_params) -> None:
    """Reject from the review queue: the money is available to the merchant again (once)."""
    if Withdrawal.objects.filter(pk=int(item.subject_id), status=WithdrawalStatus.REJECTED).exists():
        return
    withdrawal_reject(withdrawal_pk=int(item.subject_id), staff=staff, now=now, note=note)
