"""The double-entry ledger: the only code that writes transfers and account balances.

Each transfer carries a `transfer_id` derived from its cause. Asking for the same transfer again
returns the first one unchanged (a replay is a no-op); asking for it with different terms raises
`TransferConflict`. Balances are updated with `F()` expressions on rows taken in primary-key order,
so concurrent transfers neither lose updates nor deadlock.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F

from escrow.models import AccountKind, LedgerAccount, Order, Transfer, TransferKind

PLATFORM = "platform"


class LedgerError(Exception):
    pass


class TransferConflict(LedgerError):
    """The same transfer id was asked for again with different terms."""


class InsufficientFunds(LedgerError):
    pass


def account(*, kind: str, currency: str, merchant_pk: int | None = None) -> LedgerAccount:
    """The one account of this kind, owner and currency (created on first use)."""
    owner = PLATFORM if merchant_pk is None else f"merchant:{merchant_pk}"
    found = LedgerAccount.objects.filter(kind=kind, owner=owner, currency=currency).first()
    if found:
        return found
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(kind=kind, owner=owner, currency=currency, merchant_id=merchant_pk)
    except IntegrityError:
        return LedgerAccount.objects.get(kind=kind, owner=owner, currency=currency)


@dataclass(frozen=True)
class _Deltas:
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0


def _apply(transfer: Transfer, debit: _Deltas, credit: _Deltas) -> None:
    updates = [
        (transfer.debit_account_id, {"debits_pending": debit.debits_pending, "debits_posted": debit.debits_posted}),
        (transfer.credit_account_id, {"credits_pending": credit.credits_pending, "credits_posted": credit.credits_posted}),
    ]
    for account_pk, deltas in sorted(updates, key=lambda item: item[0]):
        changes = {name: F(name) + value for name, value in deltas.items() if value}
        if changes:
            LedgerAccount.objects.filter(pk=account_pk).update(**changes)


def _terms_match(existing: Transfer, wanted: Transfer) -> bool:
    fields = ("kind", "debit_account_id", "credit_account_id", "amount", "currency", "pending_id", "order_id")
    return all(getattr(existing, name) == getattr(wanted, name) for name in fields)


def _record(transfer: Transfer, debit: _Deltas, credit: _Deltas) -> Transfer:
    existing = Transfer.objects.filter(transfer_id=transfer.transfer_id).first()
    if existing is None:
        try:
            with transaction.atomic():
                transfer.save(force_insert=True)
                _apply(transfer, debit, credit)
                return transfer
        except IntegrityError:
            existing = Transfer.objects.filter(transfer_id=transfer.transfer_id).first()
            if existing is None:  # another constraint said no: a pending transfer resolved twice
                raise LedgerError(f"Transfer {transfer.transfer_id} breaks a ledger rule.") from None
    if not _terms_match(existing, transfer):
        raise TransferConflict(f"Transfer {transfer.transfer_id} exists with different terms.")
    return existing


def _check(debit: LedgerAccount, credit: LedgerAccount, amount: int) -> None:
    if amount <= 0:
        raise LedgerError("A transfer moves a positive amount.")
    if debit.currency != credit.currency:
        raise LedgerError("Both accounts of a transfer share one currency.")
    if debit.pk == credit.pk:
        raise LedgerError("A transfer moves money between two different accounts.")


@transaction.atomic
def transfer(
    *, transfer_id: str, debit: LedgerAccount, credit: LedgerAccount, amount: int, code: str,
    now: datetime, order: Order | None = None, pending: bool = False,
) -> Transfer:
    """Post (or, with `pending=True`, reserve) `amount` from `debit` to `credit`, exactly once."""
    _check(debit, credit, amount)
    row = Transfer(
        transfer_id=transfer_id, kind=TransferKind.PENDING if pending else TransferKind.SINGLE,
        debit_account=debit, credit_account=credit, amount=amount, currency=debit.currency,
        order=order, code=code, created_at=now,
    )
    if pending:
        return _record(row, _Deltas(debits_pending=amount), _Deltas(credits_pending=amount))
    return _record(row, _Deltas(debits_posted=amount), _Deltas(credits_posted=amount))


@transaction.atomic
def pending_post(
    *, transfer_id: str, pending: Transfer, now: datetime, amount: int | None = None, code: str = ""
) -> Transfer:
    """Post a pending transfer, fully or for part of it (the rest is released), at most once."""
    amount = pending.amount if amount is None else amount
    if pending.kind != TransferKind.PENDING:
        raise LedgerError(f"{pending.transfer_id} is not a pending transfer.")
    if not 0 <= amount <= pending.amount:
        raise LedgerError(f"Posting {amount} of pending {pending.transfer_id} ({pending.amount}).")
    row = Transfer(
        transfer_id=transfer_id, kind=TransferKind.POST_PENDING, debit_account_id=pending.debit_account_id,
        credit_account_id=pending.credit_account_id, amount=amount, currency=pending.currency,
        pending=pending, order_id=pending.order_id, code=code or pending.code, created_at=now,
    )
    return _record(
        row,
        _Deltas(debits_pending=-pending.amount, debits_posted=amount),
        _Deltas(credits_pending=-pending.amount, credits_posted=amount),
    )


@transaction.atomic
def pending_void(*, transfer_id: str, pending: Transfer, now: datetime, code: str = "") -> Transfer:
    """Cancel a pending transfer, at most once: nothing moves, the reservation is released."""
    if pending.kind != TransferKind.PENDING:
        raise LedgerError(f"{pending.transfer_id} is not a pending transfer.")
    row = Transfer(
        transfer_id=transfer_id, kind=TransferKind.VOID_PENDING, debit_account_id=pending.debit_account_id,
        credit_account_id=pending.credit_account_id, amount=pending.amount, currency=pending.currency,
        pending=pending, order_id=pending.order_id, code=code or pending.code, created_at=now,
    )
    return _record(
        row, _Deltas(debits_pending=-pending.amount), _Deltas(credits_pending=-pending.amount)
    )


def open_pending(*, order: Order) -> list[Transfer]:
    """The order's pending transfers that are neither posted nor voided yet."""
    return list(
        Transfer.objects.filter(order=order, kind=TransferKind.PENDING, resolutions__isnull=True).order_by("pk")
    )


def platform_account(kind: AccountKind, currency: str) -> LedgerAccount:
    return account(kind=kind, currency=currency)


def merchant_account(kind: AccountKind, currency: str, merchant_pk: int) -> LedgerAccount:
    return account(kind=kind, currency=currency, merchant_pk=merchant_pk)


def book_many_rollback_unsafe(*, rows: list[Transfer]) -> None:
    """Insert many new transfers (single or post-pending) and update each touched account once.

    For batch jobs only. It does not look up earlier copies of the transfers: if any transfer id
    exists already, or any pending transfer was resolved already, the database constraints raise
    `IntegrityError` and the caller must roll back the whole batch (and redo it one by one). The
    caller must hold the locks that make every pending transfer in `rows` still open.
    """
    deltas: dict[int, dict[str, int]] = {}

    def add(account_pk: int, name: str, value: int) -> None:
        if value:
            bucket = deltas.setdefault(account_pk, {})
            bucket[name] = bucket.get(name, 0) + value

    for row in rows:
        if row.amount < 0 or row.debit_account_id == row.credit_account_id:
            raise LedgerError(f"Transfer {row.transfer_id} breaks a ledger rule.")
        if row.kind == TransferKind.SINGLE:
            add(row.debit_account_id, "debits_posted", row.amount)
            add(row.credit_account_id, "credits_posted", row.amount)
        elif row.kind == TransferKind.POST_PENDING:
            reserved = row.pending.amount
            if row.amount > reserved:
                raise LedgerError(f"Posting {row.amount} of pending {row.pending.transfer_id} ({reserved}).")
            add(row.debit_account_id, "debits_pending", -reserved)
            add(row.credit_account_id, "credits_pending", -reserved)
            add(row.debit_account_id, "debits_posted", row.amount)
            add(row.credit_account_id, "credits_posted", row.amount)
        else:
            raise LedgerError(f"book_many does not book {row.kind} transfers.")
    Transfer.objects.bulk_create(rows, batch_size=1000)
    for account_pk in sorted(deltas):
        LedgerAccount.objects.filter(pk=account_pk).update(
            **{name: F(name) + value for name, value in deltas[account_pk].items()}
        )


def available_of(account_row: LedgerAccount) -> int:
    """What a merchant can withdraw: posted credits less posted and pending debits."""
    return account_row.credits_posted - account_row.debits_posted - account_row.debits_pending
