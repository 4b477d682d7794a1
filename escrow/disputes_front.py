"""Escrow's front door for disputes: the only calls a `disputes` app makes into escrow's money and keys.

Escrow never imports `disputes`; what a cause means is the caller's business. Every service here:

- takes a `cause` (the caller's reason, e.g. "dispute:12:decision:3") and records it once
  (`DisputeAction.cause` is unique). Calling again with the same cause and the same terms returns the
  first result and moves nothing; the same cause with other terms is refused (`cause_conflict`).
  The transfers it books are keyed by the order's holds (each resolves once) and by the refund the
  cause created, so no second cause can pay out an order twice either;
- locks the order's payment, then the order (`escrow/locks.py`), so it runs one at a time with
  payments, refunds, the buyer's confirmation and the release timer;
- moves the order's status only by compare-and-set through `ORDER_TRANSITIONS`;
- writes its audit row in the same transaction and asks the gateway for money only on commit;
- refuses with `DisputeRefused` (a `Refused`: a message for people, a `code` for machines) and
  changes nothing when the rules say no.

Money of a disputed order stays frozen in escrow: the buyer's confirmation and the release timer
move only `delivered` orders, and nothing moves an order back to `delivered`.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import audit_record
from core.errors import Refused
from core.money import percent_of
from escrow import ledger, webhook_events
from escrow.locks import order_lock, payment_lock
from escrow.models import (
    ORDER_TRANSITIONS,
    AccountKind,
    DisputeAction,
    DisputeActionKind,
    KeyDisposition,
    Order,
    OrderStatus,
    Payment,
    Refund,
    Transfer,
    TransferKind,
)
from escrow.refunds import RefundRefused, order_refund_book
from escrow.releases import fee_percent_for, hold_release
from shop import services as shop_services
from shop.models import WebhookEventType

logger = logging.getLogger(__name__)

CAUSE_MAX_LENGTH = DisputeAction._meta.get_field("cause").max_length


class DisputeRefused(Refused):
    """A front-door call the rules refuse; nothing changed. The message is for people, `code` for machines."""


def split_amounts(*, paid: int, buyer_percent: int, fee_percent: Decimal) -> tuple[int, int, int]:
    """Split `paid` between the buyer and the merchant: `(refund, share, fee)`, adding up to `paid`.

    The refund is `buyer_percent` of `paid`, rounded half up to the minor unit; the platform fee is
    taken only on the merchant's part (`paid - refund`), by the shop's one rounding rule (half up), and
    the merchant's share is what is left. None is negative for `buyer_percent` and `fee_percent` in 0..100.
    """
    if not 0 <= buyer_percent <= 100:
        raise ValueError(f"buyer_percent {buyer_percent} is not between 0 and 100")
    refund = percent_of(paid, Decimal(buyer_percent))
    merchant_part = paid - refund
    fee = percent_of(merchant_part, Decimal(fee_percent))
    return refund, merchant_part - fee, fee


# --- the services ----------------------------------------------------------------------------------


@transaction.atomic
def order_dispute_open(*, order_pk: int, cause: str, now: datetime, actor: User | None = None) -> DisputeAction:
    """Freeze a delivered order's money under a dispute: delivered → disputed, by compare-and-set.

    Only inside the inspection window (`inspection_ends_at > now`, checked here, on the server).
    From then on the buyer's confirmation and the release timer leave the order alone; only
    `order_dispute_release`, `order_dispute_refund` or `order_dispute_split` settle it.
    Refuses `bad_state` (not delivered: already confirmed, released, refunded or disputed) and
    `outside_window`.
    """
    with _locked(order_pk=order_pk, cause=cause, kind=DisputeActionKind.OPEN, terms={}) as call:
        if call.replay:
            return call.replay
        order = call.order
        if order.status != OrderStatus.DELIVERED:
            raise DisputeRefused(_("Only a delivered order can be disputed."), code="bad_state")
        if order.inspection_ends_at is None or order.inspection_ends_at <= now:
            raise DisputeRefused(_("The inspection window of this order has closed."), code="outside_window")
        ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.DISPUTED, from_=[OrderStatus.DELIVERED])
        return call.done(now=now, actor=actor, audit=AuditAction.ORDER_DISPUTED)


@transaction.atomic
def order_dispute_release(*, order_pk: int, cause: str, now: datetime, actor: User | None = None) -> DisputeAction:
    """Decide a dispute for the merchant: the held share and fee are posted in full (with the rolling
    reserve, as any release) and the order moves disputed → completed, exactly once. Refuses `bad_state`.
    """
    with _locked(order_pk=order_pk, cause=cause, kind=DisputeActionKind.RELEASE, terms={}) as call:
        if call.replay:
            return call.replay
        _release(order=_disputed(call.order), now=now)
        return call.decided(now=now, actor=actor)


@transaction.atomic
def order_dispute_refund(
    *,
    order_pk: int,
    cause: str,
    now: datetime,
    key_pks: list[int] | None = None,
    amount: int | None = None,
    actor: User | None = None,
) -> DisputeAction:
    """Decide a dispute for the buyer: refund in full (neither `key_pks` nor `amount`), some keys, or
    an amount (minor units), through `escrow/refunds.py` and the gateway (asked on commit).

    The voided or partly posted holds and the refund are booked in one transaction; the merchant keeps
    what is not refunded less the fee on it. Refunded keys were delivered, so they are revoked, never
    restocked; an amount refund leaves the keys with the buyer. The order moves disputed → refunded
    (all of it) or partially_refunded. Refuses `bad_state`, `bad_terms`, `bad_keys`, `bad_amount`.
    """
    if key_pks is not None and amount is not None:
        raise DisputeRefused(_("Refund either some keys or an amount, not both."), code="bad_terms")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
        raise DisputeRefused(_("Refund an amount above zero and at most what was paid."), code="bad_amount")
    terms: dict[str, object] = {}
    if key_pks is not None:
        terms["keys"] = sorted(set(key_pks))
    if amount is not None:
        terms["amount"] = amount
    with _locked(order_pk=order_pk, cause=cause, kind=DisputeActionKind.REFUND, terms=terms) as call:
        if call.replay:
            return call.replay
        refund = _refund(order=_disputed(call.order), payment=call.payment, now=now, key_pks=key_pks, amount=amount)
        return call.decided(now=now, actor=actor, refund=refund)


@transaction.atomic
def order_dispute_split(
    *, order_pk: int, buyer_percent: int, cause: str, now: datetime, actor: User | None = None
) -> DisputeAction:
    """Decide a dispute by a split: `buyer_percent` of the paid amount back to the buyer, the rest to
    the merchant less the fee on the merchant's part only (`split_amounts`).

    In one transaction the held share and fee are posted for what the merchant keeps (the rest of each
    hold is released) and the refund is booked; the gateway is asked on commit. Refund + share + fee
    is exactly what was paid. The order moves disputed → partially_refunded, or refunded when the
    buyer gets it all, or completed when the buyer's part rounds to nothing. The keys stay with the
    buyer (all of them revoked on a full refund). Refuses `bad_percent`, `bad_state`, and
    `bad_amounts` when the merchant's fee rate rose since the payment so far that the fee on their part
    exceeds the fee held.
    """
    if isinstance(buyer_percent, bool) or not isinstance(buyer_percent, int) or not 0 <= buyer_percent <= 100:
        raise DisputeRefused(_("The buyer's share must be a whole percentage from 0 to 100."), code="bad_percent")
    terms = {"buyer_percent": buyer_percent}
    with _locked(order_pk=order_pk, cause=cause, kind=DisputeActionKind.SPLIT, terms=terms) as call:
        if call.replay:
            return call.replay
        order = _disputed(call.order)
        refund_amount, _share, _fee = split_amounts(
            paid=order.amount, buyer_percent=buyer_percent, fee_percent=fee_percent_for(order.merchant)
        )
        refund = None
        if refund_amount == 0:
            _release(order=order, now=now)
        else:
            refund = _refund(order=order, payment=call.payment, now=now, key_pks=None, amount=refund_amount)
        return call.decided(now=now, actor=actor, refund=refund)


@transaction.atomic
def order_dispute_replace_key(
    *, order_pk: int, key_pk: int, cause: str, now: datetime, actor: User | None = None
) -> DisputeAction:
    """Give the buyer of a disputed order a fresh key of the same product in place of `key_pk`, at once.

    The fresh key is taken like a sale (available keys in order, `SKIP LOCKED`: never one sold twice);
    the disputed key stays on the order as evidence, marked replaced, never sold again. The order stays
    disputed and its money frozen until a decision. Refuses `bad_state`, `bad_key` (not a delivered key
    of this order) and `out_of_stock`, with nothing changed.
    """
    with _locked(order_pk=order_pk, cause=cause, kind=DisputeActionKind.REPLACE_KEY, terms={"key": key_pk}) as call:
        if call.replay:
            return call.replay
        order = _disputed(call.order)
        try:
            fresh_pk = shop_services.key_replace(order_pk=order.pk, key_pk=key_pk)
        except shop_services.KeyNotReplaceable:
            raise DisputeRefused(_("Choose a delivered key of this order."), code="bad_key") from None
        except shop_services.OutOfStock:
            raise DisputeRefused(_("There is no key of this product left in stock."), code="out_of_stock") from None
        shop_services.product_low_stock_check(product_pk=order.product_id, now=now)  # e-mails after commit
        return call.done(
            now=now,
            actor=actor,
            audit=AuditAction.ORDER_KEY_REPLACED,
            replaced_key_id=key_pk,
            replacement_key_id=fresh_pk,
        )


# --- what the services share -----------------------------------------------------------------------


def _disputed(order: Order) -> Order:
    if order.status != OrderStatus.DISPUTED:
        raise DisputeRefused(_("This order is not under dispute."), code="bad_state")
    return order


def _release(*, order: Order, now: datetime) -> None:
    ORDER_TRANSITIONS.apply(
        model=Order, pk=order.pk, to=OrderStatus.COMPLETED, from_=[OrderStatus.DISPUTED], completed_at=now
    )
    hold_release(order=order, now=now)
    webhook_events.order_event_emit(
        order=order, event_type=WebhookEventType.ORDER_COMPLETED, status=OrderStatus.COMPLETED, now=now
    )


def _refund(*, order: Order, payment: Payment, now: datetime, key_pks: list[int] | None, amount: int | None) -> Refund:
    try:
        return order_refund_book(
            order=order,
            payment=payment,
            now=now,
            key_pks=key_pks,
            amount=amount,
            disposition=KeyDisposition.REVOKE,  # the buyer has seen these keys: never sell them again
            reason="dispute",
            actor=None,  # the decision's actor is on the dispute's own audit row
        )
    except RefundRefused as refused:
        raise DisputeRefused(str(refused), code=refused.code) from None


class _Call:
    """One front-door call with its locks held: the replay of its cause, or the way to record it once."""

    def __init__(self, *, order: Order, payment: Payment, cause: str, kind: str, terms: dict):
        self.order, self.payment, self.cause, self.kind, self.terms = order, payment, cause, kind, terms
        self.replay = self._replay()

    def _replay(self) -> DisputeAction | None:
        found = DisputeAction.objects.filter(cause=self.cause).first()
        if found is None:
            return None
        if (found.order_id, found.kind, found.terms) != (self.order.pk, self.kind, self.terms):
            raise DisputeRefused(_("This cause was already used for a different action."), code="cause_conflict")
        logger.info("escrow.dispute_action_replayed", extra={"order": self.order.pk, "cause": self.cause})
        return found

    def done(self, *, now: datetime, actor: User | None, audit: str, **result: object) -> DisputeAction:
        """Record the action under its cause and write the audit row, in the caller's transaction."""
        try:
            with transaction.atomic():
                action = DisputeAction.objects.create(
                    cause=self.cause, order=self.order, kind=self.kind, terms=self.terms, created_at=now, **result
                )
        except IntegrityError:  # the same cause, taken meanwhile for another order
            raise DisputeRefused(
                _("This cause was already used for a different action."), code="cause_conflict"
            ) from None
        data = {"cause": self.cause, "kind": self.kind, "terms": self.terms}
        data.update({name: value for name, value in result.items() if value is not None})
        audit_record(action=audit, subject=self.order, now=now, actor=actor, data=data)
        self.order.refresh_from_db()
        logger.info("escrow.dispute_action", extra={"order": self.order.pk, "kind": self.kind, "cause": self.cause})
        return action

    def decided(self, *, now: datetime, actor: User | None, refund: Refund | None = None) -> DisputeAction:
        """Record a decision with the money the ledger booked for it (refund + share + fee = paid)."""
        posted = dict(
            Transfer.objects.filter(
                order=self.order, kind=TransferKind.POST_PENDING, debit_account__kind=AccountKind.ESCROW
            ).values_list("code", "amount")
        )
        return self.done(
            now=now,
            actor=actor,
            audit=AuditAction.ORDER_DISPUTE_DECIDED,
            refund_id=refund.pk if refund is not None else None,
            refund_amount=refund.amount if refund is not None else 0,
            share=posted.get("share", 0),
            fee=posted.get("fee", 0),
        )


@contextmanager
def _locked(*, order_pk: int, cause: str, kind: str, terms: dict) -> Iterator[_Call]:
    """Check the cause, lock the order's payment and then the order, and look for a replay.

    Balances touched inside are updated once, as the block ends (`ledger.balances_deferred`), so the
    shared platform rows stay locked only for the commit.
    """
    if not isinstance(cause, str) or not cause.strip() or len(cause) > CAUSE_MAX_LENGTH:
        raise DisputeRefused(
            _("A cause of 1 to %(max)d characters is required.") % {"max": CAUSE_MAX_LENGTH}, code="bad_cause"
        )
    # An order has one payment, opened at checkout; it is locked first, as on every money path.
    payment_pk = Payment.objects.filter(order_id=order_pk).order_by("pk").values_list("pk", flat=True).first()
    if payment_pk is None:
        raise DisputeRefused(_("Order not found."), code="not_found")
    payment = payment_lock(payment_pk)
    order = order_lock(order_pk)
    with ledger.balances_deferred():
        yield _Call(order=order, payment=payment, cause=cause, kind=kind, terms=terms)
