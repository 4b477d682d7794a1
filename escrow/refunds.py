"""Refunds: money goes back to the buyer through the gateway, in full or for some keys of an order.

A refund is booked at once: the held share and fee are voided (full refund) or posted for what the
merchant keeps (partial refund), and the refunded amount moves escrow → buyer_refunds_payable. The
gateway is asked to pay on commit; its signed `refund.succeeded` event then moves the money
buyer_refunds_payable → gateway_clearing. Until then the buyer is a creditor of the platform (that
account feeds the proof of liabilities).
"""

import logging
from datetime import datetime

from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import AuditAction, AuditEntry, User
from accounts.services import audit_record
from core.errors import Refused
from core.money import percent_of
from escrow import clawbacks, ledger, webhook_events
from escrow.gateways import GatewayEvent, WebhookRejected, gateway_get
from escrow.gateways.base import RefundDeclined
from escrow.locks import order_lock, payment_lock, refund_lock
from escrow.models import (
    ORDER_STATUSES_IN_ESCROW,
    ORDER_TRANSITIONS,
    REFUND_TRANSITIONS,
    AccountKind,
    KeyDisposition,
    KeyReveal,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from escrow.releases import fee_percent_for, reserve_hold_open
from shop import services as shop_services
from shop.models import CardKey, CardKeyStatus, Merchant, WebhookEventType

logger = logging.getLogger(__name__)

REFUNDABLE = list(ORDER_STATUSES_IN_ESCROW)
PARTIALLY_REFUNDABLE = [OrderStatus.DELIVERED, OrderStatus.DISPUTED]


class RefundRefused(Refused):
    """A refund that cannot go ahead; nothing changed. The message is for people."""


# Why a refunded key is taken out of sale (stored in `Refund.revoked_keys`, shown before confirming).
REVOKED_BECAUSE_ASKED = "asked"
REVOKED_BECAUSE_REVEALED = "revealed"
REVOKED_BECAUSE_EXPORTED = "exported"


def revoke_reason_text(reason: str) -> str:
    return {
        REVOKED_BECAUSE_ASKED: _("revoking was chosen"),
        REVOKED_BECAUSE_REVEALED: _("the buyer has seen it"),
        REVOKED_BECAUSE_EXPORTED: _("it was in a stock export"),
    }[reason]


def refund_keys_plan(*, order: Order, key_pks: list[int], disposition: str) -> tuple[list[int], dict[int, str]]:
    """Which of these keys of `order` go back on sale, and which are revoked and why.

    A key goes back on sale only if nobody outside can hold it: it was reserved and never delivered,
    or it was delivered but its order's keys were never shown (reveals are recorded per order: one
    reveal counts for all its keys) and it was never in a merchant's export. Otherwise it is revoked,
    even when `disposition` asked for return to stock.
    """
    revealed = KeyReveal.objects.filter(order=order).exists()
    restock: list[int] = []
    revoked: dict[int, str] = {}
    keys = CardKey.objects.filter(pk__in=key_pks, order=order).order_by("pk")
    for pk, status, exported_at in keys.values_list("pk", "status", "exported_at"):
        if status == CardKeyStatus.RESERVED:
            restock.append(pk)  # never delivered: nobody has seen it
        elif disposition == KeyDisposition.REVOKE:
            revoked[pk] = REVOKED_BECAUSE_ASKED
        elif revealed:
            revoked[pk] = REVOKED_BECAUSE_REVEALED
        elif exported_at is not None:
            revoked[pk] = REVOKED_BECAUSE_EXPORTED
        else:
            restock.append(pk)
    return restock, revoked


def order_refund(
    *,
    order_pk: int,
    now: datetime,
    key_pks: list[int] | None = None,
    disposition: str = KeyDisposition.RESTOCK,
    reason: str = "staff",
    note: str = "",
    actor: User | None = None,
    merchant: Merchant | None = None,
) -> Refund:
    """Refund an order in full (`key_pks` None or all its keys) or for some of its delivered keys.

    With `merchant`, only that merchant's own order can be refunded (anything else looks missing).
    Exactly one refund per order: the order is settled by it (refunded / partially refunded), and a
    second call raises `RefundRefused` and moves nothing. Keys return to stock only as
    `refund_keys_plan` allows; the refund records which were revoked and why.
    """
    with transaction.atomic(durable=True):
        payment = Payment.objects.filter(order_id=order_pk, status=PaymentStatus.SUCCEEDED).first()
        if payment is None:
            raise RefundRefused(_("This order has no completed payment to refund."), code="not_paid")
        payment = payment_lock(payment.pk)
        order = order_lock(order_pk)
        if merchant is not None and order.merchant_id != merchant.pk:
            raise RefundRefused(_("Order not found."), code="not_found")
        # Voids, posts and the refund itself touch several balances: applied at once, in pk order.
        with ledger.balances_deferred():
            refund = order_refund_book(
                order=order,
                payment=payment,
                now=now,
                key_pks=key_pks,
                disposition=disposition,
                reason=reason,
                note=note,
                actor=actor,
            )
    return refund


def order_refund_book(
    *,
    order: Order,
    payment: Payment,
    now: datetime,
    key_pks: list[int] | None,
    disposition: str,
    reason: str,
    actor: User | None,
    amount: int | None = None,
    note: str = "",
) -> Refund:
    """The booking itself; the caller holds the payment and order locks inside its transaction.

    With `amount` (and no `key_pks`) a sum of money is refunded instead of keys: the buyer keeps the
    keys, the merchant keeps the rest less its fee; the whole amount is a full refund.
    """
    assert transaction.get_connection().in_atomic_block
    if order.status in clawbacks.RELEASED and payment.status == PaymentStatus.SUCCEEDED:
        # Released already: the money comes back from the merchant and the fee (escrow/clawbacks.py).
        return clawbacks.refund_after_release_book(
            order=order,
            payment=payment,
            now=now,
            key_pks=key_pks,
            amount=amount,
            disposition=disposition,
            reason=reason,
            note=note,
            actor=actor,
        )
    if order.status not in REFUNDABLE:
        raise RefundRefused(_("An order in this state cannot be refunded."), code="bad_state")
    if disposition not in KeyDisposition.values:
        raise RefundRefused(_("Choose whether the keys return to stock or are revoked."), code="bad_disposition")
    held = CardKey.objects.filter(order=order, status__in=[CardKeyStatus.RESERVED, CardKeyStatus.SOLD])
    all_keys = sorted(held.values_list("pk", flat=True))
    chosen = all_keys if key_pks is None else sorted(set(key_pks))
    if not set(chosen) <= set(all_keys) or (key_pks is not None and not chosen):
        raise RefundRefused(_("Choose keys of this order to refund."), code="bad_keys")
    full = chosen == all_keys
    if amount is not None:
        if key_pks is not None or not 0 < amount <= order.amount:
            raise RefundRefused(_("Refund an amount above zero and at most what was paid."), code="bad_amount")
        full = amount == order.amount
        chosen = all_keys if full else []

    escrow = ledger.platform_account(AccountKind.ESCROW, order.currency)
    pendings = {p.code: p for p in ledger.open_pending(order=order)}
    if full:
        amount = order.amount
        for pending in pendings.values():
            ledger.pending_void(transfer_id=f"{pending.transfer_id}:void", pending=pending, now=now)
        target = OrderStatus.REFUNDED
    else:
        if order.status not in PARTIALLY_REFUNDABLE:
            raise RefundRefused(_("Only delivered keys can be refunded one by one."), code="bad_state")
        if amount is None:
            amount = order.unit_price * len(chosen)
        kept = order.amount - amount
        share_held = pendings["share"].amount if "share" in pendings else 0
        fee_held = pendings["fee"].amount if "fee" in pendings else 0
        # Fee first, by the one rounding rule, on what the buyer keeps paying for; never more
        # to the merchant than was held for them.
        share = min(kept - percent_of(kept, fee_percent_for(order.merchant)), share_held)
        fee = kept - share
        if fee > fee_held:
            raise RefundRefused(_("This partial refund does not fit the amounts held."), code="bad_amounts")
        for code, keep in (("share", share), ("fee", fee)):
            if code in pendings:
                ledger.pending_post(
                    transfer_id=f"{pendings[code].transfer_id}:post", pending=pendings[code], now=now, amount=keep
                )
        reserve_hold_open(order=order, share=share, now=now)
        target = OrderStatus.PARTIALLY_REFUNDED

    restock, revoked = refund_keys_plan(order=order, key_pks=chosen, disposition=disposition)
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
    ledger.transfer(
        transfer_id=f"refund:{refund.pk}",
        debit=escrow,
        credit=ledger.platform_account(AccountKind.BUYER_REFUNDS_PAYABLE, order.currency),
        amount=amount,
        code="refund",
        order=order,
        now=now,
    )
    shop_services.keys_refund_restock(order_pk=order.pk, key_pks=restock)
    shop_services.keys_refund_revoke(order_pk=order.pk, key_pks=list(revoked))
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=target, completed_at=now)
    webhook_events.order_event_emit(
        order=order, event_type=WebhookEventType.ORDER_REFUNDED, status=target, now=now, refund=refund
    )
    audit_record(
        action=AuditAction.ORDER_REFUNDED,
        subject=order,
        now=now,
        actor=actor,
        data={
            "refund": refund.pk,
            "amount": amount,
            "keys": chosen,
            "disposition": disposition,
            "restocked": restock,
            "revoked": refund.revoked_keys,
            "reason": reason,
            "note": refund.note,
            "full": full,
        },
    )
    from escrow.tasks import refund_submit_task

    transaction.on_commit(lambda: refund_submit_task.delay(refund_pk=refund.pk))
    from escrow.tasks import order_email_task

    # The buyer hears of it once it is booked (the gateway's confirmation follows on its own time).
    transaction.on_commit(lambda: order_email_task.delay(order_pk=order.pk, event="refunded"), robust=True)
    logger.info("escrow.order_refunded", extra={"order": order.pk, "refund": refund.pk, "reason": reason})
    return refund


def received_refund_book(
    *, order: Order, payment: Payment, amount: int, reason: str, actor: User | None, note: str, now: datetime
) -> Refund:
    """Refund money that never reached escrow: a payment held for review, out of the suspense account
    (in the currency it came in). The caller holds the payment and order locks in its transaction; the
    gateway is asked on commit, as for any refund."""
    assert transaction.get_connection().in_atomic_block
    currency = payment.received_currency
    refund = Refund.objects.create(
        order=order,
        payment=payment,
        amount=amount,
        currency=currency,
        key_count=0,
        reason=reason,
        note=note.strip()[:500],
        gateway=payment.gateway,
        requested_by=actor if actor is not None and actor.is_authenticated else None,
        created_at=now,
    )
    ledger.transfer(
        transfer_id=f"refund:{refund.pk}",
        debit=ledger.platform_account(AccountKind.SUSPENSE, currency),
        credit=ledger.platform_account(AccountKind.BUYER_REFUNDS_PAYABLE, currency),
        amount=amount,
        code="refund",
        order=order,
        now=now,
    )
    audit_record(
        action=AuditAction.REFUND_BOOKED,
        subject=refund,
        now=now,
        actor=actor,
        data={"amount": amount, "reason": reason},
    )
    from escrow.tasks import refund_submit_task

    transaction.on_commit(lambda: refund_submit_task.delay(refund_pk=refund.pk))
    return refund


def refund_reference(refund: Refund) -> str:
    """The shop's own reference for a refund at its gateway: the idempotency key it asks with."""
    return f"refund:{refund.pk}"


def refund_submit(*, refund_pk: int, now: datetime) -> Refund:
    """Ask the gateway to pay the refund, holding no row lock and no transaction while it answers.

    A slow or hanging gateway must not keep the refund (or anything else) locked, so the call is made
    in autocommit and its answer recorded in a second short transaction. Safe to run twice, or twice at
    once: the gateway's idempotency key is the refund, so a retry gets the same refund id and pays at
    most once; "refund.submitted" is audited once. The gateway's `refund.succeeded` may arrive before
    the answer is recorded: it finds the refund by the reference it echoes (`refund_succeeded`).
    """
    refund = Refund.objects.select_related("payment").get(pk=refund_pk)
    if refund.status != RefundStatus.REQUESTED:
        return refund
    gateway = gateway_get(refund.gateway)
    if getattr(gateway, "refunds_by_hand", False):
        # No refund API (epay): the refund stays requested, listed for staff on the payments page,
        # until they pay it back by hand and record it (`refund_paid_by_hand`).
        logger.warning("escrow.refund_by_hand_needed", extra={"refund": refund.pk, "gateway": refund.gateway})
        return refund
    try:
        refund_id = gateway.refund_request(
            payment_id=refund.payment.payment_id,
            amount=refund.amount,
            currency=refund.currency,
            idempotency_key=refund_reference(refund),
        )
    except RefundDeclined as error:  # the provider said no: staff must pay it another way
        with transaction.atomic(durable=True):
            audit_record(action=AuditAction.REFUND_DECLINED, subject=refund, now=now, data={"error": str(error)[:500]})
        logger.error("escrow.refund_declined", extra={"refund": refund.pk, "error": str(error)[:500]})
        return refund
    with transaction.atomic(durable=True):
        refund = refund_lock(refund_pk)
        submitted = AuditEntry.objects.filter(
            action=AuditAction.REFUND_SUBMITTED, subject_type=Refund._meta.label_lower, subject_id=str(refund.pk)
        )
        if refund.gateway_refund_id != refund_id or not submitted.exists():
            Refund.objects.filter(pk=refund.pk).update(gateway_refund_id=refund_id)
            audit_record(
                action=AuditAction.REFUND_SUBMITTED, subject=refund, now=now, data={"gateway_refund_id": refund_id}
            )
        if getattr(gateway, "refund_settles_on_answer", False) and refund.status == RefundStatus.REQUESTED:
            # The provider's answer is its confirmation (Alipay, Stripe): paid back as of now.
            with ledger.balances_deferred():
                _refund_settle(refund=refund, gateway_refund_id=refund_id, now=now)
    refund.refresh_from_db()
    return refund


@transaction.atomic(durable=True)
def refund_paid_by_hand(*, refund_pk: int, staff: User, reference: str, now: datetime) -> Refund:
    """Staff paid a requested refund back outside the gateway's API (epay has none, or the provider
    declined): record their payment's reference and settle what the platform owed the buyer, once.
    Refused (`RefundRefused`, nothing changed) for a refund already paid or without a reference."""
    reference = reference.strip()
    if not reference:
        raise RefundRefused(_("Enter the reference of the payment you made to the buyer."), code="no_reference")
    refund = refund_lock(refund_pk)
    if refund.status != RefundStatus.REQUESTED:
        raise RefundRefused(_("This refund is already paid."), code="bad_state")
    gateway_refund_id = f"hand:{refund.pk}:{reference}"[:64]
    with ledger.balances_deferred():
        _refund_settle(refund=refund, gateway_refund_id=gateway_refund_id, now=now)
    audit_record(
        action=AuditAction.REFUND_PAID_BY_HAND, subject=refund, now=now, actor=staff, data={"reference": reference}
    )
    refund.refresh_from_db()
    return refund


def _refund_settle(*, refund: Refund, gateway_refund_id: str, now: datetime) -> None:
    """The buyer has the money: what the platform owed them moves to the gateway's side, once (the
    refund's row is locked by the caller)."""
    REFUND_TRANSITIONS.apply(
        model=Refund, pk=refund.pk, to=RefundStatus.SUCCEEDED, succeeded_at=now, gateway_refund_id=gateway_refund_id
    )
    ledger.transfer(
        transfer_id=f"refund:{refund.pk}:paid",
        debit=ledger.platform_account(AccountKind.BUYER_REFUNDS_PAYABLE, refund.currency),
        credit=ledger.platform_account(AccountKind.GATEWAY_CLEARING, refund.currency),
        amount=refund.amount,
        code="refund_paid",
        order=refund.order,
        now=now,
    )
    audit_record(action=AuditAction.REFUND_SUCCEEDED, subject=refund, now=now, data={"amount": refund.amount})


def refund_succeeded(*, payment: Payment, event: GatewayEvent, now: datetime) -> Refund:
    """The gateway paid the buyer back: settle what the platform owed them, exactly once."""
    assert transaction.get_connection().in_atomic_block
    of_payment = Refund.objects.filter(gateway=payment.gateway, payment=payment)
    found = of_payment.filter(gateway_refund_id=event.refund_id).first()
    if found is None and event.refund_reference:
        # Sent before the shop stored the gateway's answer: known by the reference the shop asked with.
        found = next(
            (
                r
                for r in of_payment.filter(gateway_refund_id__isnull=True)
                if refund_reference(r) == event.refund_reference
            ),
            None,
        )
    if found is None:
        raise WebhookRejected("Unknown refund.")
    refund = refund_lock(found.pk)
    if refund.status == RefundStatus.SUCCEEDED:
        return refund
    if event.amount != refund.amount or event.currency != refund.currency:
        raise WebhookRejected("Refund amount or currency does not match.")
    _refund_settle(refund=refund, gateway_refund_id=event.refund_id, now=now)
    refund.refresh_from_db()
    return refund
