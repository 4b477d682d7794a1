"""The double-entry ledger: the only code that writes transfers and account balances.

Each transfer carries a `transfer_id` derived from its cause. Asking for the same transfer again
returns the first one unchanged (a replay is a no-op); asking for it with different terms raises
`TransferConflict`. Balances are updated with `F()` expressions on rows locked first, all at once, in
primary-key order (`locks.ledger_accounts_lock`), so concurrent transfers neither lose updates nor
deadlock. A path that books several transfers applies them in one go (`balances_deferred`), or locks
every account it will touch before the first one.
"""

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F

from core import prepared
from escrow.locks import ledger_accounts_lock
from escrow.models import AccountKind, LedgerAccount, Order, Transfer, TransferKind

PLATFORM = "platform"


class LedgerError(Exception):
    pass


class TransferConflict(LedgerError):
    """The same transfer id was asked for again with different terms."""


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


_ACCOUNT_FIELDS = [field.attname for field in LedgerAccount._meta.concrete_fields]
_ACCOUNT_COLUMNS = ", ".join(f'"{field.column}"' for field in LedgerAccount._meta.concrete_fields)


def accounts(*wanted: tuple[str, str, int | None]) -> list[LedgerAccount]:
    """Several accounts, each given as (kind, currency, merchant pk or None), in one query."""
    keys = [
        (kind, PLATFORM if merchant_pk is None else f"merchant:{merchant_pk}", currency)
        for kind, currency, merchant_pk in wanted
    ]
    # Raw SQL: every payment reads four accounts, and the ORM spent more CPU compiling an OR of four
    # three-field conditions than PostgreSQL spent answering it (the unique index answers the list).
    # Only the model's own column names and placeholders are formatted in; every value is a parameter.
    rows = ", ".join(["(%s, %s, %s)"] * len(keys))
    sql = f"SELECT {_ACCOUNT_COLUMNS} FROM escrow_ledgeraccount WHERE (kind, owner, currency) IN (VALUES {rows})"  # noqa: S608
    connection = transaction.get_connection()
    with connection.cursor() as cursor:
        prepared.execute(cursor, sql, [value for key in keys for value in key])
        found_rows = cursor.fetchall()
    found = {}
    for row in found_rows:
        account_row = LedgerAccount.from_db(connection.alias, _ACCOUNT_FIELDS, row)
        found[(account_row.kind, account_row.owner, account_row.currency)] = account_row
    return [
        found.get(key) or account(kind=kind, currency=currency, merchant_pk=merchant_pk)
        for key, (kind, currency, merchant_pk) in zip(keys, wanted, strict=True)
    ]


def _balance_changes(rows: Iterable[Transfer]) -> dict[int, dict[str, int]]:
    """What the transfers do to each account's cached balances (post and void rows need `.pending`)."""
    changes: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        debit, credit = changes[row.debit_account_id], changes[row.credit_account_id]
        if row.kind == TransferKind.SINGLE:
            debit["debits_posted"] += row.amount
            credit["credits_posted"] += row.amount
        elif row.kind == TransferKind.PENDING:
            debit["debits_pending"] += row.amount
            credit["credits_pending"] += row.amount
        else:
            debit["debits_pending"] -= row.pending.amount
            credit["credits_pending"] -= row.pending.amount
            if row.kind == TransferKind.POST_PENDING:
                debit["debits_posted"] += row.amount
                credit["credits_posted"] += row.amount
    return changes


def _apply(rows: Iterable[Transfer]) -> None:
    """Bring the cached balances up to date with `rows`, touching each account once, in primary-key order.

    Only rows that exist when this runs count: a transfer undone by a rolled-back savepoint since it was
    booked changes no balance. On PostgreSQL that is one statement (`_apply_in_one_statement`).
    """
    rows = list(rows)
    if not rows:
        return
    if transaction.get_connection().vendor == "postgresql":
        _apply_in_one_statement(rows)
        return
    alive = set(Transfer.objects.filter(pk__in=[row.pk for row in rows]).values_list("pk", flat=True))
    rows = [row for row in rows if row.pk in alive]
    changes = _balance_changes(rows)
    ledger_accounts_lock(changes)  # all the rows first, in pk order, never one after another
    for account_pk in sorted(changes):
        fields = {name: F(name) + value for name, value in changes[account_pk].items() if value}
        if fields:
            LedgerAccount.objects.filter(pk=account_pk).update(**fields)


_BALANCE_FIELDS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")


def _apply_in_one_statement(rows: list[Transfer]) -> None:
    """One UPDATE for every balance the rows touch, its locks taken in primary-key order.

    The deltas travel as VALUES (transfer, account, four deltas); joining them to `escrow_transfer`
    keeps only transfers that still exist. The MATERIALIZED CTE locks the accounts ordered by pk
    before the UPDATE reaches any of them (it can only update a row the CTE has already produced), so
    two of these never wait for each other in opposite orders — the rule `ledger_accounts_lock` keeps.
    """
    values, params = _deltas(rows, key=lambda row: row.pk, key_type="bigint")
    # Only placeholders and this module's own column names are formatted in; every value is a parameter.
    sql = f"""
        WITH delta (transfer_id, account_id, {", ".join(_BALANCE_FIELDS)}) AS (VALUES {values}),
        live AS (
            SELECT delta.account_id, {_SUMS}
            FROM delta JOIN escrow_transfer ON escrow_transfer.id = delta.transfer_id
            GROUP BY delta.account_id
        ),
        {_LOCKED}
        UPDATE escrow_ledgeraccount AS account SET {_ASSIGNMENTS}
        FROM live JOIN locked ON locked.id = live.account_id
        WHERE account.id = live.account_id
    """  # noqa: S608
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(sql, params)


_ASSIGNMENTS = ", ".join(f"{name} = account.{name} + live.{name}" for name in _BALANCE_FIELDS)
_SUMS = ", ".join(f"sum(delta.{name}) AS {name}" for name in _BALANCE_FIELDS)
# The accounts `live` touches, locked in primary-key order before the UPDATE reaches any of them.
_LOCKED = """locked AS MATERIALIZED (
            SELECT id FROM escrow_ledgeraccount WHERE id IN (SELECT account_id FROM live) ORDER BY id FOR UPDATE
        )"""


def _deltas(rows: list[Transfer], *, key, key_type: str) -> tuple[str, list]:
    """The rows' balance changes as the VALUES list (transfer key, account, four deltas), and its params."""
    values, params = [], []
    for row in rows:
        for account_pk, deltas in _balance_changes([row]).items():
            values.append(f"(%s::{key_type}, %s::bigint, %s::bigint, %s::bigint, %s::bigint, %s::bigint)")
            params += [key(row), account_pk, *(deltas.get(name, 0) for name in _BALANCE_FIELDS)]
    return ", ".join(values), params


def _insert_and_apply_in_one_statement(rows: list[Transfer]) -> set[str]:
    """`_insert_new` and `_apply_in_one_statement` of the rows it inserted, in ONE statement; the
    transfer ids it inserted. The insert's RETURNING says which rows are new (a replayed transfer id
    is skipped, and moves no balance); the accounts are locked in pk order as in `_apply_in_one_statement`."""
    connection = transaction.get_connection()
    insert, insert_params = _insert_sql(rows, connection)
    values, params = _deltas(rows, key=lambda row: row.transfer_id, key_type="text")
    # Only placeholders and this module's own column names are formatted in; every value is a parameter.
    sql = f"""
        WITH inserted AS ({insert}),
        delta (transfer_id, account_id, {", ".join(_BALANCE_FIELDS)}) AS (VALUES {values}),
        live AS (
            SELECT delta.account_id, {_SUMS}
            FROM delta JOIN inserted ON inserted.transfer_id = delta.transfer_id
            GROUP BY delta.account_id
        ),
        {_LOCKED},
        applied AS (
            UPDATE escrow_ledgeraccount AS account SET {_ASSIGNMENTS}
            FROM live JOIN locked ON locked.id = live.account_id
            WHERE account.id = live.account_id
        )
        SELECT id, transfer_id FROM inserted
    """  # noqa: S608
    with connection.cursor() as cursor:
        prepared.execute(cursor, sql, insert_params + params)
        return _inserted_set(rows, cursor.fetchall(), connection)


_deferred = threading.local()


@contextmanager
def balances_deferred() -> Iterator[None]:
    """Book transfers at once, but update the account balances they touch once, as the block ends.

    Every payment touches the same platform accounts (clearing, escrow, fees), and updating a balance
    locks its row until commit. Applied transfer by transfer, those locks would be held for the rest of
    the transaction and concurrent payments would queue behind each other; applied here, at the end of
    a block placed just before the commit, they are held only for the commit itself.

    Only transfer rows that still exist when the block ends count, so a transfer undone by a
    rolled-back savepoint inside the block changes no balance. Balances read inside the
    block do not include its own transfers yet. Nested blocks leave the work to the outermost one.
    """
    if getattr(_deferred, "rows", None) is not None:
        yield
        return
    assert transaction.get_connection().in_atomic_block, "balances_deferred needs the caller's transaction"
    _deferred.rows = []
    try:
        yield
    finally:
        rows, _deferred.rows = _deferred.rows, None
        if rows and not transaction.get_connection().needs_rollback:
            _apply(rows)


def _terms_match(existing: Transfer, wanted: Transfer) -> bool:
    fields = ("kind", "debit_account_id", "credit_account_id", "amount", "currency", "pending_id", "order_id")
    return all(getattr(existing, name) == getattr(wanted, name) for name in fields)


_INSERT_FIELDS = [field for field in Transfer._meta.concrete_fields if not field.primary_key]


def _insert_new(rows: list[Transfer]) -> set[str]:
    """Insert the rows that break no unique rule, in one statement; the transfer ids it inserted.

    `ON CONFLICT DO NOTHING RETURNING`: a row whose transfer id exists (a replay), or that resolves a
    pending transfer resolved already, is skipped instead of aborting the transaction, so no savepoint
    is needed around the insert. Inserted rows get their primary keys.
    """
    connection = transaction.get_connection()
    sql, params = _insert_sql(rows, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return _inserted_set(rows, cursor.fetchall(), connection)


def _insert_sql(rows: list[Transfer], connection) -> tuple[str, list]:
    """The `INSERT … ON CONFLICT DO NOTHING RETURNING id, transfer_id` of the rows, and its params."""
    columns = ", ".join(connection.ops.quote_name(field.column) for field in _INSERT_FIELDS)
    placeholders = "(" + ", ".join(["%s"] * len(_INSERT_FIELDS)) + ")"
    params = [
        field.get_db_prep_save(getattr(row, field.attname), connection) for row in rows for field in _INSERT_FIELDS
    ]
    values = ", ".join([placeholders] * len(rows))
    # Only placeholders and the model's own column names are formatted in; every value is a parameter.
    sql = f"INSERT INTO escrow_transfer ({columns}) VALUES {values} ON CONFLICT DO NOTHING RETURNING id, transfer_id"  # noqa: S608
    return sql, params


def _inserted_set(rows: list[Transfer], returned: list[tuple[int, str]], connection) -> set[str]:
    """Give the inserted rows their primary keys; the transfer ids inserted."""
    inserted = {transfer_id: pk for pk, transfer_id in returned}
    for row in rows:
        if row.transfer_id in inserted:
            row.pk = inserted[row.transfer_id]
            row._state.adding, row._state.db = False, connection.alias
    return set(inserted)


def _existing(transfer: Transfer) -> Transfer:
    """The transfer booked earlier under `transfer`'s id, if its terms are the same (a replay)."""
    existing = Transfer.objects.filter(transfer_id=transfer.transfer_id).first()
    if existing is None:  # another rule said no: a pending transfer resolved twice
        raise LedgerError(f"Transfer {transfer.transfer_id} breaks a ledger rule.")
    if not _terms_match(existing, transfer):
        raise TransferConflict(f"Transfer {transfer.transfer_id} exists with different terms.")
    return existing


def _book(rows: list[Transfer]) -> list[Transfer]:
    """Insert each row exactly once; a replay returns the row booked before, unchanged."""
    assert transaction.get_connection().in_atomic_block, "ledger writes need the caller's transaction"
    inserted = _insert_new(rows)
    booked = [row if row.transfer_id in inserted else _existing(row) for row in rows]
    new_rows = [row for row in rows if row.transfer_id in inserted]
    deferred = getattr(_deferred, "rows", None)
    if deferred is None:
        _apply(new_rows)
    else:
        deferred.extend(new_rows)
    return booked


def _record(transfer: Transfer) -> Transfer:
    """Insert the transfer, or return the one already booked under its id (a replay is a no-op).

    The insert is tried first: the unique transfer id, not a look-up beforehand, decides.
    """
    return _book([transfer])[0]


def _check(debit: LedgerAccount, credit: LedgerAccount, amount: int) -> None:
    if amount <= 0:
        raise LedgerError("A transfer moves a positive amount.")
    if debit.currency != credit.currency:
        raise LedgerError("Both accounts of a transfer share one currency.")
    if debit.pk == credit.pk:
        raise LedgerError("A transfer moves money between two different accounts.")


@dataclass(frozen=True)
class Move:
    """One transfer to book with `transfers()`."""

    transfer_id: str
    debit: LedgerAccount
    credit: LedgerAccount
    amount: int
    code: str
    pending: bool = False


def _move_row(move: Move, *, now: datetime, order: Order | None) -> Transfer:
    _check(move.debit, move.credit, move.amount)
    return Transfer(
        transfer_id=move.transfer_id,
        kind=TransferKind.PENDING if move.pending else TransferKind.SINGLE,
        debit_account=move.debit,
        credit_account=move.credit,
        amount=move.amount,
        currency=move.debit.currency,
        order=order,
        code=move.code,
        created_at=now,
    )


def transfer(
    *,
    transfer_id: str,
    debit: LedgerAccount,
    credit: LedgerAccount,
    amount: int,
    code: str,
    now: datetime,
    order: Order | None = None,
    pending: bool = False,
) -> Transfer:
    """Post (or, with `pending=True`, reserve) `amount` from `debit` to `credit`, exactly once."""
    move = Move(transfer_id=transfer_id, debit=debit, credit=credit, amount=amount, code=code, pending=pending)
    return _record(_move_row(move, now=now, order=order))


def transfers(*, moves: list[Move], now: datetime, order: Order | None = None) -> list[Transfer]:
    """Book several transfers with one INSERT; each still exactly once (a replay returns the first)."""
    return _book([_move_row(move, now=now, order=order) for move in moves])


def transfers_closing(*, moves: list[Move], now: datetime, order: Order | None = None) -> list[Transfer]:
    """`transfers`, with the balances they change brought up to date by the same statement: for the
    last ledger write of a transaction (the payment's), where `balances_deferred` would apply them a
    moment later anyway. The accounts are locked from here to the commit, in primary-key order, as
    `balances_deferred` keeps them; transfers deferred earlier in the block are still applied at its
    end. A replay (a transfer id booked before) changes no balance and returns the first booking."""
    rows = [_move_row(move, now=now, order=order) for move in moves]
    connection = transaction.get_connection()
    assert connection.in_atomic_block, "ledger writes need the caller's transaction"
    if connection.vendor == "postgresql":
        inserted = _insert_and_apply_in_one_statement(rows)
    else:
        inserted = _insert_new(rows)
        _apply([row for row in rows if row.transfer_id in inserted])
    return [row if row.transfer_id in inserted else _existing(row) for row in rows]


def resolution_row(
    *, pending: Transfer, kind: str, transfer_id: str, now: datetime, amount: int | None = None, code: str = ""
) -> Transfer:
    """The (unsaved) transfer that posts — fully or for `amount` — or voids a pending transfer."""
    if pending.kind != TransferKind.PENDING:
        raise LedgerError(f"{pending.transfer_id} is not a pending transfer.")
    amount = pending.amount if amount is None or kind == TransferKind.VOID_PENDING else amount
    if not 0 <= amount <= pending.amount:
        raise LedgerError(f"Posting {amount} of pending {pending.transfer_id} ({pending.amount}).")
    return Transfer(
        transfer_id=transfer_id,
        kind=kind,
        debit_account_id=pending.debit_account_id,
        credit_account_id=pending.credit_account_id,
        amount=amount,
        currency=pending.currency,
        pending=pending,
        order_id=pending.order_id,
        code=code or pending.code,
        created_at=now,
    )


def pending_post(
    *, transfer_id: str, pending: Transfer, now: datetime, amount: int | None = None, code: str = ""
) -> Transfer:
    """Post a pending transfer, fully or for part of it (the rest is released), at most once."""
    return _record(
        resolution_row(
            pending=pending, kind=TransferKind.POST_PENDING, transfer_id=transfer_id, now=now, amount=amount, code=code
        )
    )


def pending_void(*, transfer_id: str, pending: Transfer, now: datetime, code: str = "") -> Transfer:
    """Cancel a pending transfer, at most once: nothing moves, the reservation is released."""
    return _record(
        resolution_row(pending=pending, kind=TransferKind.VOID_PENDING, transfer_id=transfer_id, now=now, code=code)
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
    for row in rows:
        if row.amount < 0 or row.debit_account_id == row.credit_account_id:
            raise LedgerError(f"Transfer {row.transfer_id} breaks a ledger rule.")
        if row.kind == TransferKind.POST_PENDING and row.amount > row.pending.amount:
            raise LedgerError(f"Posting {row.amount} of pending {row.pending.transfer_id} ({row.pending.amount}).")
        if row.kind not in (TransferKind.SINGLE, TransferKind.POST_PENDING):
            raise LedgerError(f"book_many does not book {row.kind} transfers.")
    Transfer.objects.bulk_create(rows, batch_size=1000)
    _apply(rows)


def available_of(account_row: LedgerAccount) -> int:
    """What a merchant can withdraw: posted credits less posted and pending debits. The one definition of
    a merchant's available balance: withdrawals, the money pages and the ledger checks all use it."""
    return account_row.credits_posted - account_row.debits_posted - account_row.debits_pending


def available_including_deferred(account_row: LedgerAccount) -> int:
    """`available_of` the account as it stands now, including the transfers this transaction booked inside
    `balances_deferred` that are not applied to the cached row yet. The caller holds the row's lock."""
    fresh = LedgerAccount.objects.get(pk=account_row.pk)
    pks = getattr(_deferred, "pks", None)
    if pks:
        change = _balance_changes(Transfer.objects.filter(pk__in=pks).select_related("pending")).get(fresh.pk, {})
        for name, value in change.items():
            setattr(fresh, name, getattr(fresh, name) + value)
    return available_of(fresh)
