"""Money taken back after release: chargebacks, refunds made at the provider, refunds of completed orders.

Once an order is released, its merchant's share sits in their available balance (part of it perhaps in
the rolling reserve) and the fee in the platform's fees. When the buyer gets money back after that, it
comes back the way it went out:

    merchant_available --share--> escrow      (clawback:<pk>:share)
    platform_fees      --fee----> escrow      (clawback:<pk>:fee)
    escrow             --amount-> gateway_clearing        (clawback:<pk>: the provider already took it)
                               or buyer_refunds_payable   (refund:<refund pk>: the shop refunds it, as any refund)

The share is taken from the merchant's available balance; what that does not cover is taken from
their reserve, by releasing their reserve holds early (this order's first, then the oldest) into
available; what still lacks leaves the available balance below zero. A negative balance blocks every
withdrawal in that currency (`withdrawals.withdrawal_request`) and is shown on the money page until
later sales cover it. The fee part is the fee's share of the amount (the whole fee when all that is
left is taken back); `share + fee = amount`.

An order still in escrow (paid, delivered, disputed) that is charged back is first released (its holds
posted), then taken back the same way, so there is one path and the ledger's rule for settled orders
(share + fee + refunds = what was paid, less what was taken back) holds for both.

Each clawback is unique per (gateway, provider reference): a redelivered chargeback moves nothing.
"""

import logging
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import audit_record
from escrow import ledger, webhook_events
from escrow.gateways import GatewayEvent, WebhookRejected
from escrow.locks import ledger_accounts_lock, order_lock, payment_lock
from escrow.models import (
    ORDER_STATUSES_IN_ESCROW,
    ORDER_TRANSITIONS,
    AccountKind,
    Clawback,
    ClawbackKind,
    KeyDisposition,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    ReserveHold,
    Transfer,
    TransferKind,
)
from escrow.releases import hold_release
from shop import services as shop_services
from shop.models import CardKey, CardKeyStatus, WebhookEventType

logger = logging.getLogger(__name__)

# Money still in escrow in these states: released first, then taken back.
IN_ESCROW = list(ORDER_STATUSES_IN_ESCROW)
RELEASED = [OrderStatus.COMPLETED, OrderStatus.PARTIALLY_REFUNDED]


class ClawbackRefused(Exception):
    """The order cannot give back this amount (nothing changed); the message says why."""


def released_parts(order: Order) -> tuple[int, int]:
    """The order's share and fee posted to the merchant and the fee account, less what was taken back."""
    posted = dict(
        Transfer.objects.filter(
            order=order,
            kind=TransferKind.POST_PENDING,
            debit_account__kind=AccountKind.ESCROW,
            code__in=["share", "fee"],
        )
        .values_list("code")
        .annotate(total=Sum("amount"))
    )
    taken = Clawback.objects.filter(order=order).aggregate(share=Sum("share"), fee=Sum("fee"))
    return posted.get("share", 0) - (taken["share"] or 0), posted.get("fee", 0) - (taken["fee"] or 0)


def _split(*, amount: int, share: int, fee: int) -> tuple[int, int]:
    """`amount` as (share part, fee part): the fee's proportion, half up; all of both when all is taken."""
    kept = share + fee
    if amount == kept:
        return share, fee
    fee_back = int((Decimal(fee) * amount / kept).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return amount - fee_back, fee_back


def _reserve_released_early(*, order: Order, needed: int, now: datetime) -> int:
    """Release the merchant's open reserve holds (this order's first, then by release date) until at
    least `needed` is back in available; returns how much was released."""
    holds = list(
        ReserveHold.objects.filter(merchant_id=order.merchant_id, currency=order.currency, released_at__isnull=True)
        .select_for_update()
        .order_by("pk")
    )
    holds.sort(key=lambda hold: (hold.order_id != order.pk, hold.release_at, hold.pk))
    released = 0
    for hold in holds:
        if released >= needed:
            break
        ReserveHold.objects.filter(pk=hold.pk, released_at__isnull=True).update(released_at=now)
        ledger.transfer(
            transfer_id=f"order:{hold.order_id}:reserve:release",
            debit=ledger.merchant_account(AccountKind.MERCHANT_RESERVE, hold.currency, hold.merchant_id),
            credit=ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, hold.currency, hold.merchant_id),
            amount=hold.amount,
            code="reserve_release",
            order=Order(pk=hold.order_id),
            now=now,
        )
        audit_record(
            action=AuditAction.RESERVE_RELEASED,
            subject=hold,
            now=now,
            data={"amount": hold.amount, "order": hold.order_id, "early_for": order.pk},
        )
        released += hold.amount
    return released


def clawback_book(
    *,
    order: Order,
    payment: Payment,
    amount: int,
    kind: str,
    gateway: str,
    reference: str,
    now: datetime,
    actor: User | None = None,
    refund: Refund | None = None,
) -> Clawback:
    """Take `amount` back from a released (or still held) order's merchant and fee, exactly once per
    (gateway, reference). The caller holds the payment and order locks inside its transaction and books
    where the money goes: this books merchant and fee → escrow, and for chargebacks and provider refunds
    escrow → gateway_clearing too (the provider already took the money).

    Raises `ClawbackRefused` (nothing changed) for an order in another state, or for more than the
    merchant and the fee still hold of it.
    """
    assert transaction.get_connection().in_atomic_block
    existing = Clawback.objects.filter(gateway=gateway, reference=reference).first()
    if existing is not None:
        return existing
    if order.status not in IN_ESCROW + RELEASED:
        raise ClawbackRefused(f"Order {order.pk} is {order.status}: nothing of it can be taken back.")
    was_paid_only = order.status == OrderStatus.PAID
    if order.status in IN_ESCROW:
        hold_release(order=order, now=now)  # posts the share and fee (and opens the reserve), once
    share_left, fee_left = released_parts(order)
    if not 0 < amount <= share_left + fee_left:
        raise ClawbackRefused(
            f"Order {order.pk}: {amount} cannot be taken back, only {share_left + fee_left} is left of it."
        )
    share, fee = _split(amount=amount, share=share_left, fee=fee_left)

    available_account = ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, order.currency, order.merchant_id)
    escrow = ledger.platform_account(AccountKind.ESCROW, order.currency)
    fees = ledger.platform_account(AccountKind.PLATFORM_FEES, order.currency)
    reserve = ledger.merchant_account(AccountKind.MERCHANT_RESERVE, order.currency, order.merchant_id)
    clearing = ledger.platform_account(AccountKind.GATEWAY_CLEARING, order.currency)
    ledger_accounts_lock([available_account.pk, escrow.pk, fees.pk, reserve.pk, clearing.pk])
    available = ledger.available_including_deferred(available_account)
    from_reserve = 0
    if share > max(available, 0):
        from_reserve = _reserve_released_early(order=order, needed=share - max(available, 0), now=now)

    clawback = Clawback.objects.create(
        order=order,
        payment=payment,
        merchant_id=order.merchant_id,
        kind=kind,
        gateway=gateway,
        reference=reference,
        amount=amount,
        currency=order.currency,
        share=share,
        fee=fee,
        from_reserve=from_reserve,
        refund=refund,
        created_at=now,
    )
    moves = [
        ledger.Move(
            transfer_id=f"clawback:{clawback.pk}:share",
            debit=available_account,
            credit=escrow,
            amount=share,
            code="clawback_share",
        ),
        ledger.Move(
            transfer_id=f"clawback:{clawback.pk}:fee", debit=fees, credit=escrow, amount=fee, code="clawback_fee"
        ),
    ]
    if kind != ClawbackKind.REFUND:
        moves.append(
            ledger.Move(
                transfer_id=f"clawback:{clawback.pk}", debit=escrow, credit=clearing, amount=amount, code="chargeback"
            )
        )
    ledger.transfers(moves=[move for move in moves if move.amount], order=order, now=now)

    # Keys: never sold again if anyone may hold them; a paid order's keys never left: back to stock.
    if was_paid_only:
        shop_services.keys_release(order_pk=order.pk)
    elif kind != ClawbackKind.REFUND:
        sold = list(CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).values_list("pk", flat=True))
        shop_services.keys_refund_revoke(order_pk=order.pk, key_pks=sold)
    all_back = share == share_left and fee == fee_left
    target = OrderStatus.REFUNDED if all_back or was_paid_only else OrderStatus.PARTIALLY_REFUNDED
    if target != order.status:
        ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=target, completed_at=order.completed_at or now)
        webhook_events.order_event_emit(order=order, event_type=WebhookEventType.ORDER_REFUNDED, status=target, now=now)
    audit_record(
        action=AuditAction.ORDER_CLAWED_BACK,
        subject=order,
        now=now,
        actor=actor,
        data={
            "clawback": clawback.pk,
            "kind": kind,
            "reference": reference,
            "amount": amount,
            "share": share,
            "fee": fee,
            "from_reserve": from_reserve,
            "available_before": available,
        },
    )
    logger.warning(
        "escrow.order_clawed_back", extra={"order": order.pk, "clawback": clawback.pk, "kind": kind, "amount": amount}
    )
    return clawback


def _locked(payment: Payment) -> tuple[Payment, Order]:
    payment = payment_lock(payment.pk)
    return payment, order_lock(payment.order_id)


def chargeback_received(*, payment: Payment, event: GatewayEvent, now: datetime) -> Clawback:
    """The provider took a payment back (a chargeback): the merchant's share and the fee follow it.
    Once per chargeback id; refused (`WebhookRejected`, nothing stored) when it cannot be booked."""
    payment, order = _locked(payment)
    if payment.status != PaymentStatus.SUCCEEDED or event.currency != order.currency:
        raise WebhookRejected("Chargeback on a payment that was not booked, or in another currency.")
    try:
        return clawback_book(
            order=order,
            payment=payment,
            amount=event.amount,
            kind=ClawbackKind.CHARGEBACK,
            gateway=payment.gateway,
            reference=event.chargeback_id,
            now=now,
        )
    except ClawbackRefused as error:
        raise WebhookRejected(str(error)) from None


def payment_refunded_at_provider(*, payment: Payment, event: GatewayEvent, now: datetime) -> Clawback | None:
    """The provider reports all it refunded on a payment so far (`event.amount`, cumulative). What the
    shop's own refunds and earlier provider refunds do not explain was refunded at the provider's
    dashboard: it is taken back from the merchant like a chargeback."""
    payment, order = _locked(payment)
    if payment.status != PaymentStatus.SUCCEEDED or event.currency != order.currency:
        raise WebhookRejected("Refund on a payment that was not booked, or in another currency.")
    by_shop = Refund.objects.filter(payment=payment).aggregate(total=Sum("amount"))["total"] or 0
    at_provider = (
        Clawback.objects.filter(payment=payment, kind=ClawbackKind.PROVIDER_REFUND).aggregate(total=Sum("amount"))[
            "total"
        ]
        or 0
    )
    unexplained = event.amount - by_shop - at_provider
    if unexplained <= 0:
        return None
    try:
        return clawback_book(
            order=order,
            payment=payment,
            amount=unexplained,
            kind=ClawbackKind.PROVIDER_REFUND,
            gateway=payment.gateway,
            reference=f"{event.chargeback_id}:refunded:{event.amount}",
            now=now,
        )
    except ClawbackRefused as error:
        raise WebhookRejected(str(error)) from None


def refund_after_release_book(
    *,
    order: Order,
    payment: Payment,
    now: datetime,
    key_pks: list[int] | None,
    amount: int | None,
    disposition: str,
    reason: str,
    note: str,
    actor: User | None,
) -> Refund:
    """Refund a completed (or partly refunded) order: the money comes back from the merchant and the fee
    (a clawback) and goes to the buyer through the gateway like any refund. The caller holds the payment
    and order locks in its transaction. Keys refunded are revoked unless nobody can hold them."""
    from escrow import refunds

    if disposition not in KeyDisposition.values:
        raise refunds.RefundRefused(
            _("Choose whether the keys return to stock or are revoked."), code="bad_disposition"
        )
    share_left, fee_left = released_parts(order)
    sold = sorted(CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).values_list("pk", flat=True))
    if amount is None:
        chosen = sold if key_pks is None else sorted(set(key_pks))
        if not chosen or not set(chosen) <= set(sold):
            raise refunds.RefundRefused(_("Choose keys of this order to refund."), code="bad_keys")
        amount = share_left + fee_left if chosen == sold else order.unit_price * len(chosen)
    else:
        chosen = sold if amount == share_left + fee_left else []
    if not 0 < amount <= share_left + fee_left:
        raise refunds.RefundRefused(
            _("Refund an amount above zero and at most what is left of the order."), code="bad_amount"
        )
    restock, revoked = refunds.refund_keys_plan(order=order, key_pks=chosen, disposition=disposition)
    refund = Refund.objects.create(
        order=order,
        payment=payment,
        amount=amount,
        currency=order.currency,
        key_count=len(chosen),
        card_key_pks=chosen,
        key_disposition=disposition,
        revoked_keys={str(pk): why for pk, why in revoked.items()},
        reason=reason,
        note=note.strip()[:500],
        gateway=payment.gateway,
        requested_by=actor if actor is not None and actor.is_authenticated else None,
        created_at=now,
    )
    clawback_book(
        order=order,
        payment=payment,
        amount=amount,
        kind=ClawbackKind.REFUND,
        gateway=payment.gateway,
        reference=refunds.refund_reference(refund),
        now=now,
        actor=actor,
        refund=refund,
    )
    ledger.transfer(
        transfer_id=f"refund:{refund.pk}",
        debit=ledger.platform_account(AccountKind.ESCROW, order.currency),
        credit=ledger.platform_account(AccountKind.BUYER_REFUNDS_PAYABLE, order.currency),
        amount=amount,
        code="refund",
        order=order,
        now=now,
    )
    shop_services.keys_refund_restock(order_pk=order.pk, key_pks=restock)
    shop_services.keys_refund_revoke(order_pk=order.pk, key_pks=list(revoked))
    audit_record(
        action=AuditAction.ORDER_REFUNDED,
        subject=order,
        now=now,
        actor=actor,
        data={"refund": refund.pk, "amount": amount, "keys": chosen, "after_release": True, "reason": reason},
    )
    from escrow.tasks import refund_submit_task

    transaction.on_commit(lambda: refund_submit_task.delay(refund_pk=refund.pk))
    return refund
