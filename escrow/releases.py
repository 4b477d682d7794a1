"""Releasing held money: to the merchant and the fee account, with a rolling reserve for young merchants.

A release posts the order's pending share and fee (exactly once: each post's id is derived from its
pending transfer, and a pending transfer resolves once). For a merchant younger than
`RESERVE_MERCHANT_AGE_DAYS`, `RESERVE_PERCENT` of the released share then moves
merchant_available → merchant_reserve and is released back after `RESERVE_DAYS` by a periodic task.
"""

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction

import risk
from accounts.models import AuditAction, AuditEntry
from accounts.services import audit_record, audit_record_many
from core.money import percent_of
from escrow import ledger, webhook_events
from escrow.locks import order_lock
from escrow.models import (
    ORDER_TRANSITIONS,
    AccountKind,
    Order,
    OrderStatus,
    ReserveHold,
    Transfer,
    TransferKind,
)
from shop.models import Merchant, WebhookEventType

logger = logging.getLogger(__name__)


def fee_percent_for(merchant: Merchant) -> Decimal:
    return merchant.fee_percent if merchant.fee_percent is not None else settings.PLATFORM_FEE_PERCENT


_ASK_RISK = object()


def reserve_percent_for(*, merchant: Merchant, now: datetime, raised_percent=_ASK_RISK) -> Decimal:
    """The share of each release this merchant puts in the rolling reserve now: what risk raised it to
    (a dispute rate over the threshold; never below the usual), else `RESERVE_PERCENT` for merchants
    younger than `RESERVE_MERCHANT_AGE_DAYS` and 0 for established ones. The merchant balance API shows
    it as `reserve_percent`."""
    raised = risk.merchant_reserve_percent(merchant.pk) if raised_percent is _ASK_RISK else raised_percent
    if raised is not None:
        return max(Decimal(raised), settings.RESERVE_PERCENT)
    if merchant.created_at <= now - timedelta(days=settings.RESERVE_MERCHANT_AGE_DAYS):
        return Decimal(0)
    return settings.RESERVE_PERCENT


def reserve_amount_for(*, merchant: Merchant, share: int, now: datetime, raised_percent=_ASK_RISK) -> int:
    """The part of a released share that goes into the rolling reserve (0 for established merchants
    whose reserve risk has not raised)."""
    percent = reserve_percent_for(merchant=merchant, now=now, raised_percent=raised_percent)
    return percent_of(share, percent) if percent else 0


def reserve_hold_open(*, order: Order, share: int, now: datetime) -> ReserveHold | None:
    """Move the reserve part of a just-released share into the merchant's reserve. Once per order."""
    amount = reserve_amount_for(merchant=order.merchant, share=share, now=now)
    if amount <= 0:
        return None
    ledger.transfer(
        transfer_id=f"order:{order.pk}:reserve",
        debit=ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, order.currency, order.merchant_id),
        credit=ledger.merchant_account(AccountKind.MERCHANT_RESERVE, order.currency, order.merchant_id),
        amount=amount,
        code="reserve",
        order=order,
        now=now,
    )
    hold, _ = ReserveHold.objects.get_or_create(
        order=order,
        defaults={
            "merchant_id": order.merchant_id,
            "amount": amount,
            "currency": order.currency,
            "held_at": now,
            "release_at": now + timedelta(days=settings.RESERVE_DAYS),
        },
    )
    return hold


def hold_release(*, order: Order, now: datetime) -> None:
    """Post the order's held share and fee in full, then hold its reserve. Idempotent by transfer id."""
    share = 0
    for pending in ledger.open_pending(order=order):
        ledger.pending_post(transfer_id=f"{pending.transfer_id}:post", pending=pending, now=now)
        if pending.code == "share":
            share = pending.amount
    if share:
        reserve_hold_open(order=order, share=share, now=now)


@transaction.atomic(durable=True)
def order_release_lapsed(*, order_pk: int, now: datetime) -> bool:
    """Release one delivered order whose inspection window lapsed with no dispute. Safe to run twice."""
    order = order_lock(order_pk)
    changed = ORDER_TRANSITIONS.update(
        queryset=Order.objects.filter(pk=order.pk, inspection_ends_at__lte=now),
        to=OrderStatus.COMPLETED,
        from_=[OrderStatus.DELIVERED],
        completed_at=now,
    )
    if not changed:
        return False
    with ledger.balances_deferred():  # every balance it touches locked at once, in pk order
        hold_release(order=order, now=now)
    audit_record(action=AuditAction.ORDER_COMPLETED, subject=order, now=now, data={"by": "inspection_lapsed"})
    webhook_events.order_event_emit(
        order=order, event_type=WebhookEventType.ORDER_COMPLETED, status=OrderStatus.COMPLETED, now=now
    )
    return True


def _release_batch_rollback_unsafe(*, pks: list[int], now: datetime) -> int:
    """Release a batch of locked, delivered orders with a handful of statements (see orders_release_due)."""
    changed = ORDER_TRANSITIONS.update(
        queryset=Order.objects.filter(pk__in=pks),
        to=OrderStatus.COMPLETED,
        from_=[OrderStatus.DELIVERED],
        completed_at=now,
    )
    if changed != len(pks):
        raise IntegrityError("an order in the batch changed state under the lock")
    orders = {o.pk: o for o in Order.objects.filter(pk__in=pks).select_related("merchant")}
    raised = risk.merchant_reserve_percents({order.merchant_id for order in orders.values()})
    pendings = list(
        Transfer.objects.filter(order_id__in=pks, kind=TransferKind.PENDING, resolutions__isnull=True).order_by("pk")
    )
    rows, holds = [], []
    accounts: dict[tuple[str, int, str], int] = {}

    def account_pk(kind: str, order: Order) -> int:
        key = (kind, order.merchant_id, order.currency)
        if key not in accounts:
            accounts[key] = ledger.merchant_account(kind, order.currency, order.merchant_id).pk
        return accounts[key]

    for pending in pendings:
        rows.append(
            ledger.resolution_row(
                pending=pending, kind=TransferKind.POST_PENDING, transfer_id=f"{pending.transfer_id}:post", now=now
            )
        )
        if pending.code != "share":
            continue
        order = orders[pending.order_id]
        amount = reserve_amount_for(
            merchant=order.merchant, share=pending.amount, now=now, raised_percent=raised.get(order.merchant_id)
        )
        if amount <= 0:
            continue
        rows.append(
            Transfer(
                transfer_id=f"order:{order.pk}:reserve",
                kind=TransferKind.SINGLE,
                debit_account_id=account_pk(AccountKind.MERCHANT_AVAILABLE, order),
                credit_account_id=account_pk(AccountKind.MERCHANT_RESERVE, order),
                amount=amount,
                currency=order.currency,
                order_id=order.pk,
                code="reserve",
                created_at=now,
            )
        )
        holds.append(
            ReserveHold(
                order_id=order.pk,
                merchant_id=order.merchant_id,
                amount=amount,
                currency=order.currency,
                held_at=now,
                release_at=now + timedelta(days=settings.RESERVE_DAYS),
            )
        )
    ledger.book_many_rollback_unsafe(rows=rows)
    ReserveHold.objects.bulk_create(holds, batch_size=1000)
    audit_record_many(
        entries=[
            AuditEntry(
                at=now,
                action=AuditAction.ORDER_COMPLETED,
                subject_type="escrow.order",
                subject_id=str(pk),
                data={"by": "inspection_lapsed"},
            )
            for pk in pks
        ]
    )
    webhook_events.orders_completed_emit(orders=[orders[pk] for pk in sorted(pks)], now=now)
    return changed


def orders_release_due(*, now: datetime, batch: int = 1000) -> int:
    """Release every delivered order whose inspection window lapsed without a dispute.

    Each batch is one transaction: its orders are locked (SKIP LOCKED, so a buyer confirming or
    disputing one of them at that moment is simply left for the next run), moved to completed by
    compare-and-set, and their transfers booked in bulk. If anything in a batch surprises the bulk
    path, the batch rolls back and is redone order by order, each exactly once.
    """
    released = 0
    while True:
        with transaction.atomic():
            pks = list(
                Order.objects.filter(status=OrderStatus.DELIVERED, inspection_ends_at__lte=now)
                .order_by("pk")
                .select_for_update(skip_locked=True, of=("self",))
                .values_list("pk", flat=True)[:batch]
            )
            if not pks:
                break
            try:
                with transaction.atomic():
                    released += _release_batch_rollback_unsafe(pks=pks, now=now)
                    continue
            except IntegrityError:
                logger.warning("escrow.release_batch_fallback", extra={"orders": len(pks)})
        released += sum(order_release_lapsed(order_pk=pk, now=now) for pk in pks)
    if released:
        logger.info("escrow.orders_released", extra={"count": released})
    return released


def reserves_release_due(*, now: datetime, batch: int = 1000) -> int:
    """Return every reserve hold whose time is up to the merchant's available balance, exactly once."""
    released = 0
    while True:
        with transaction.atomic():
            holds = list(
                ReserveHold.objects.filter(released_at__isnull=True, release_at__lte=now)
                .order_by("pk")
                .select_for_update(skip_locked=True)[:batch]
            )
            if not holds:
                return released
            ReserveHold.objects.filter(pk__in=[h.pk for h in holds], released_at__isnull=True).update(released_at=now)
            rows = []
            for hold in holds:
                available = ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, hold.currency, hold.merchant_id)
                reserve = ledger.merchant_account(AccountKind.MERCHANT_RESERVE, hold.currency, hold.merchant_id)
                rows.append(
                    Transfer(
                        transfer_id=f"order:{hold.order_id}:reserve:release",
                        kind=TransferKind.SINGLE,
                        debit_account_id=reserve.pk,
                        credit_account_id=available.pk,
                        amount=hold.amount,
                        currency=hold.currency,
                        order_id=hold.order_id,
                        code="reserve_release",
                        created_at=now,
                    )
                )
            ledger.book_many_rollback_unsafe(rows=rows)
            audit_record_many(
                entries=[
                    AuditEntry(
                        at=now,
                        action=AuditAction.RESERVE_RELEASED,
                        subject_type="escrow.reservehold",
                        subject_id=str(h.pk),
                        data={"amount": h.amount, "order": h.order_id},
                    )
                    for h in holds
                ]
            )
            released += len(holds)
