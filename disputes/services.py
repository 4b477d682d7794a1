"""Every change to a dispute: opening, each party's answer, messages, staff decisions and the deadline sweep.

Each service locks the dispute's row first and moves its status only by compare-and-set through
`DISPUTE_TRANSITIONS`, so two answers racing for one dispute leave exactly one outcome. Money and keys
move only through escrow's front door (`escrow.services.order_dispute_*`), in the same transaction,
each under a cause derived from the dispute and the step (`dispute:<pk>:<step>`): a replayed step moves
nothing twice. Audit rows are written in that transaction; e-mails leave on commit.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

import risk
from accounts.models import AuditAction, User
from accounts.services import alert_raise, audit_record
from core.errors import Refused
from disputes.models import (
    BUYER_CLOCK,
    DISPUTE_TRANSITIONS,
    MERCHANT_CLOCK,
    STATEMENT_MAX_LENGTH,
    Dispute,
    DisputeMessage,
    DisputeOutcome,
    DisputeReason,
    DisputeStatus,
    MessageRole,
)
from escrow import services as escrow_services
from escrow.models import Order, OrderStatus
from shop import services as shop_services
from shop.models import CardKey, CardKeyStatus, WebhookEventType

logger = logging.getLogger(__name__)

REOPENS_ALLOWED = 1


class DisputeError(Refused):
    """A dispute request the rules refuse; nothing changed."""

    code_statuses = {
        **Refused.code_statuses,
        "already_disputed": 409,
        "outside_window": 409,
        "cause_conflict": 409,
        "reopened_already": 409,
        "not_staff": 403,
        "deadline_passed": 409,
        "email_unverified": 409,
    }


def _unverified_buyer_limit_check(*, order_pk: int) -> None:
    """An account whose e-mail is unverified buys as a guest would, but keeps one dispute open at a time
    (a throw-away account must not flood merchants with disputes). Guests' orders have no account."""
    buyer_pk = Order.objects.filter(pk=order_pk).values_list("buyer_id", flat=True).first()
    if buyer_pk is None:
        return
    buyer = User.objects.select_for_update().filter(pk=buyer_pk).first()
    if buyer is None or buyer.is_email_verified:
        return
    if Dispute.objects.filter(order__buyer_id=buyer_pk).exclude(status=DisputeStatus.RESOLVED).exists():
        raise DisputeError(
            _(
                "You already have a dispute open. Confirm your e-mail address (use the link we sent you, or "
                "ask for a new one on your security page) to open another before that one is resolved."
            ),
            code="email_unverified",
        )


def _hours(name: str) -> timedelta:
    return timedelta(hours=getattr(settings, name))


def _text(value: object, *, field: str, required: bool = True) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise DisputeError(_("Please write a few words (%(field)s).") % {"field": field}, code="invalid")
    if len(text) > STATEMENT_MAX_LENGTH:
        raise DisputeError(_("Keep it to %(max)d characters at most.") % {"max": STATEMENT_MAX_LENGTH}, code="too_long")
    return text


def _front(call, **kwargs):
    """Call escrow's front door, answering its refusals as this app's (the same code, the same message)."""
    try:
        return call(**kwargs)
    except escrow_services.DisputeRefused as refused:
        raise DisputeError(str(refused), code=refused.code) from None


def _locked(dispute_pk: int) -> Dispute:
    dispute = Dispute.objects.select_for_update(of=("self",)).select_related("order").filter(pk=dispute_pk).first()
    if dispute is None:
        raise DisputeError(_("Dispute not found."), code="not_found")
    return dispute


def _move(dispute: Dispute, *, to: str, from_: list[str], **fields: object) -> None:
    if dispute.status not in from_ or not DISPUTE_TRANSITIONS.can(dispute.status, to):
        raise DisputeError(
            _("This cannot be done while the dispute is %(status)s.") % {"status": dispute.get_status_display()},
            code="bad_state",
        )
    DISPUTE_TRANSITIONS.apply(model=Dispute, pk=dispute.pk, to=to, from_=from_, mirror=dispute, **fields)
    if to == DisputeStatus.RESOLVED:
        when = fields.get("resolved_at") or timezone.now()
        _webhook_emit(dispute, event_type=WebhookEventType.DISPUTE_DECIDED, now=when)


def _webhook_emit(dispute: Dispute, *, event_type: str, now: datetime) -> None:
    """`dispute.opened` / `dispute.decided` for the merchant's webhooks, in the dispute's transaction."""
    merchant_pk = Order.objects.filter(pk=dispute.order_id).values_list("merchant_id", flat=True).get()
    data = {
        "dispute": {
            "id": dispute.pk,
            "order_id": dispute.order_id,
            "status": str(dispute.status),
            "reason": str(dispute.reason),
            "outcome": str(dispute.outcome or ""),
            "buyer_percent": dispute.buyer_percent,
        }
    }
    shop_services.webhook_emit(merchant_pk=merchant_pk, event_type=event_type, data=data, now=now)


def _first_answer(dispute: Dispute, *, now: datetime) -> datetime:
    """When the merchant first answered: kept through a reopen, so reputation measures the first answer."""
    return dispute.merchant_answered_at or now


def _in_time(dispute: Dispute, *, now: datetime) -> None:
    """An answer that would change the outcome comes before the deadline; after it, the silence rule
    applies (the sweeper runs it), so a late answer cannot overturn what the rules already decided."""
    if now >= dispute.deadline:
        raise DisputeError(_("The deadline for this answer has passed."), code="deadline_passed")


def _note(dispute: Dispute, *, role: str, body: str, now: datetime, author: User | None = None, question_for=""):
    return DisputeMessage.objects.create(
        dispute=dispute,
        role=role,
        author=author if author is not None and author.is_authenticated else None,
        body=body,
        question_for=question_for,
        created_at=now,
    )


def _audit(dispute: Dispute, *, action: str, now: datetime, actor: User | None, **data: object) -> None:
    audit_record(
        action=action,
        subject=dispute,
        now=now,
        actor=actor,
        data={"order": dispute.order_id, "status": dispute.status, **data},
    )


def _notify(dispute: Dispute, *, event: str) -> None:
    from disputes.tasks import dispute_notify_task

    _inbox_write(dispute, event=event)
    transaction.on_commit(lambda: dispute_notify_task.delay(dispute_pk=dispute.pk, event=event))


# Who hears of each event in their inbox: the party who did not act (both when staff or the clock did).
_INBOX_ROLES = {
    "opened": {MessageRole.MERCHANT},
    "reopened": {MessageRole.MERCHANT},
    "replaced": {MessageRole.BUYER},
    "contested": {MessageRole.BUYER},
    "message:buyer": {MessageRole.MERCHANT},
    "message:merchant": {MessageRole.BUYER},
}


def _inbox_write(dispute: Dispute, *, event: str) -> None:
    """An inbox line for each signed-in party concerned, in the same transaction as the step (guests,
    who have no inbox, get the e-mail)."""
    from django.urls import reverse

    from accounts.services import notification_post

    order = dispute.order
    roles = _INBOX_ROLES.get(event, {MessageRole.BUYER, MessageRole.MERCHANT})
    text = _("Order %(order)s: %(status)s") % {"order": order.pk, "status": dispute.get_status_display()}
    if event.startswith("message:"):
        text = _("Order %(order)s: a new message on the dispute") % {"order": order.pk}
    now = timezone.now()
    common = {"event": f"dispute.{event}", "subject": f"dispute:{dispute.pk}", "text": text, "now": now}
    if MessageRole.BUYER in roles and order.buyer_id:
        notification_post(
            user_pks=[order.buyer_id], url=reverse("disputes:detail", kwargs={"pk": dispute.pk}), **common
        )
    if MessageRole.MERCHANT in roles:
        notification_post(
            user_pks=[order.merchant.user_id],
            url=reverse("merchant_disputes:detail", kwargs={"pk": dispute.pk}),
            **common,
        )


def _key_pks(dispute: Dispute) -> list[int]:
    return sorted(dispute.keys.values_list("pk", flat=True))


# --- the buyer ------------------------------------------------------------------------------------------


def dispute_open(
    *,
    order_pk: int,
    reason: str,
    statement: str,
    now: datetime,
    key_pks: list[int] | None = None,
    actor: User | None = None,
) -> Dispute:
    """Open a dispute on a delivered order inside its inspection window (escrow checks the window on the
    server, under the order's lock): the order becomes `disputed`, its release timer stops and the money
    stays in escrow. `key_pks` names the disputed keys among the order's delivered keys (all of them
    when omitted). The merchant then has `DISPUTE_MERCHANT_HOURS` to answer. One dispute per order:
    refused `already_disputed`; also `outside_window`, `bad_state`, `bad_keys`, `invalid`, `too_long`,
    with nothing changed. A buyer whose account e-mail is not verified yet may have one unresolved
    dispute at a time (`email_unverified`); the check holds the buyer's row, so two openings at once
    cannot both pass it.
    """
    if reason not in DisputeReason.values:
        raise DisputeError(_("Choose one of the listed reasons."), code="bad_reason")
    statement = _text(statement, field=_("statement"))
    delivered = set(CardKey.objects.filter(order_id=order_pk, status=CardKeyStatus.SOLD).values_list("pk", flat=True))
    if key_pks is None:
        keys = sorted(delivered)
    else:
        if not isinstance(key_pks, list) or any(isinstance(k, bool) or not isinstance(k, int) for k in key_pks):
            raise DisputeError(_("Name the disputed keys by their ids."), code="bad_keys")
        keys = sorted(set(key_pks))
        if not keys or not set(keys) <= delivered:
            raise DisputeError(_("Choose keys delivered with this order."), code="bad_keys")
    if Dispute.objects.filter(order_id=order_pk).exists():
        raise DisputeError(_("This order is already disputed."), code="already_disputed")
    try:
        with transaction.atomic():
            _unverified_buyer_limit_check(order_pk=order_pk)
            # The row first: its unique order is what lets only one of two racing openings through.
            dispute = Dispute.objects.create(
                order_id=order_pk,
                reason=reason,
                statement=statement,
                opened_by=actor if actor is not None and actor.is_authenticated else None,
                created_at=now,
                deadline=now + _hours("DISPUTE_MERCHANT_HOURS"),
            )
            _front(
                escrow_services.order_dispute_open,
                order_pk=order_pk,
                cause=f"dispute:{dispute.pk}:open",
                now=now,
                actor=actor if actor is not None and actor.is_authenticated else None,
            )
            dispute.keys.set(keys)
            _audit(dispute, action=AuditAction.DISPUTE_OPENED, now=now, actor=actor, reason=reason, keys=keys)
            _webhook_emit(dispute, event_type=WebhookEventType.DISPUTE_OPENED, now=now)
            _notify(dispute, event="opened")
    except IntegrityError:
        raise DisputeError(_("This order is already disputed."), code="already_disputed") from None
    except DisputeError as refused:
        if refused.code == "bad_state" and Order.objects.filter(pk=order_pk, status=OrderStatus.DISPUTED).exists():
            raise DisputeError(_("This order is already disputed."), code="already_disputed") from None
        raise
    logger.info("disputes.opened", extra={"dispute": dispute.pk, "order": order_pk})
    _dispute_risk_check(dispute=dispute, now=now)
    return dispute


RISK_WINDOW = timedelta(days=30)
DELIVERED_ONCE = [
    OrderStatus.DELIVERED,
    OrderStatus.COMPLETED,
    OrderStatus.DISPUTED,
    OrderStatus.REFUNDED,
    OrderStatus.PARTIALLY_REFUNDED,
]


@transaction.atomic
def _dispute_risk_check(*, dispute: Dispute, now: datetime) -> None:
    """Ask the risk engine about both sides of a new dispute. The buyer: disputes per e-mail and
    account, and of them those whose keys the buyer had revealed (`dispute_revealed`); a `review`
    flags the dispute in the review queue (it goes on as usual). The merchant: their dispute and
    "already used" rates over 30 days; flagged, their rolling reserve is raised and staff alerted."""
    from escrow.models import KeyReveal

    order = Order.objects.get(pk=dispute.order_id)
    revealed = KeyReveal.objects.filter(order_id=order.pk).exists()
    decision = risk.assess(
        event="dispute",
        context=risk.RiskContext(
            actor_id=order.buyer_id,
            email=order.email,
            amount=order.amount,
            currency=order.currency,
            quantity=order.quantity,
            product_id=order.product_id,
            merchant_id=order.merchant_id,
            extra={"revealed": int(revealed), "key_used": int(dispute.reason == DisputeReason.KEY_USED)},
            count_as=("dispute_revealed",) if revealed else (),
        ),
        subject=("dispute", dispute.pk),
        now=now,
    )
    if decision.outcome != risk.Outcome.ALLOW and decision.outcome != risk.Outcome.CHALLENGE:
        risk.review_open(kind="dispute", subject_id=dispute.pk, email=order.email, decision=decision, now=now)
    since = now - RISK_WINDOW
    disputes = Dispute.objects.filter(order__merchant_id=order.merchant_id, created_at__gte=since)
    check = risk.merchant_dispute_check(
        merchant_pk=order.merchant_id,
        orders_30d=Order.objects.filter(
            merchant_id=order.merchant_id, delivered_at__gte=since, status__in=DELIVERED_ONCE
        ).count(),
        disputes_30d=disputes.count(),
        used_disputes_30d=disputes.filter(reason=DisputeReason.KEY_USED).count(),
        now=now,
    )
    if check.flagged:
        alert_raise(
            key=f"risk.merchant_flagged:{order.merchant_id}:{check.decision.pk}",
            kind="risk.merchant_flagged",
            message=_(
                "Merchant %(merchant)s has too many disputed orders (see risk decision %(decision)s): their rolling "
                "reserve was raised and they wait in the review queue."
            )
            % {"merchant": order.merchant_id, "decision": check.decision.pk},
            now=now,
            data={"merchant": order.merchant_id, "decision": check.decision.pk},
        )


@transaction.atomic
def dispute_accept(*, dispute_pk: int, now: datetime, actor: User | None = None) -> Dispute:
    """The buyer says the replacement works: the money is released to the merchant, exactly once."""
    dispute = _locked(dispute_pk)
    _move(
        dispute,
        to=DisputeStatus.RESOLVED,
        from_=[DisputeStatus.REPLACED],
        outcome=DisputeOutcome.RELEASED,
        resolved_at=now,
    )
    _release(dispute, now=now, actor=actor)
    _audit(dispute, action=AuditAction.DISPUTE_RESOLVED, now=now, actor=actor, outcome=dispute.outcome, by="buyer")
    _notify(dispute, event="resolved")
    return dispute


@transaction.atomic
def dispute_reopen(*, dispute_pk: int, statement: str, now: datetime, actor: User | None = None) -> Dispute:
    """The buyer says the replacement does not work either: back to the merchant (their clock restarts),
    once per dispute; refused `reopened_already` after that (escalate instead)."""
    statement = _text(statement, field=_("statement"))
    dispute = _locked(dispute_pk)
    if dispute.status == DisputeStatus.REPLACED and dispute.reopen_count >= REOPENS_ALLOWED:
        raise DisputeError(_("A dispute can be reopened only once; ask staff instead."), code="reopened_already")
    if dispute.status == DisputeStatus.REPLACED:
        _in_time(dispute, now=now)
    _move(
        dispute,
        to=DisputeStatus.OPEN,
        from_=[DisputeStatus.REPLACED],
        reopen_count=dispute.reopen_count + 1,
        deadline=now + _hours("DISPUTE_MERCHANT_HOURS"),
    )
    _note(dispute, role=MessageRole.BUYER, body=statement, now=now, author=actor)
    _audit(dispute, action=AuditAction.DISPUTE_REOPENED, now=now, actor=actor)
    _notify(dispute, event="reopened")
    return dispute


@transaction.atomic
def dispute_escalate(*, dispute_pk: int, now: datetime, actor: User | None = None) -> Dispute:
    """The buyer asks staff to decide now (after a contest or a replacement); staff have until the
    published arbitration deadline, `DISPUTE_ARBITRATION_HOURS` from now."""
    dispute = _locked(dispute_pk)
    if dispute.status in BUYER_CLOCK:
        _in_time(dispute, now=now)
    _escalate(dispute, now=now, actor=actor)
    return dispute


# --- the merchant -----------------------------------------------------------------------------------------


@transaction.atomic
def dispute_replace(*, dispute_pk: int, now: datetime, actor: User | None = None) -> Dispute:
    """The merchant sends a fresh key of the same product for each disputed key, at once (taken like a
    sale; the disputed keys are marked replaced and never sold again). The buyer then has
    `DISPUTE_BUYER_HOURS` to accept, reopen once or escalate; silence releases. Refused `out_of_stock`
    (nothing replaced) when there are not enough keys."""
    dispute = _locked(dispute_pk)
    if dispute.status == DisputeStatus.OPEN:
        _in_time(dispute, now=now)
    _move(
        dispute,
        to=DisputeStatus.REPLACED,
        from_=[DisputeStatus.OPEN],
        deadline=now + _hours("DISPUTE_BUYER_HOURS"),
        merchant_answered_at=_first_answer(dispute, now=now),
    )
    fresh = []
    for key_pk in _key_pks(dispute):
        action = _front(
            escrow_services.order_dispute_replace_key,
            order_pk=dispute.order_id,
            key_pk=key_pk,
            cause=f"dispute:{dispute.pk}:replace:{dispute.reopen_count}:{key_pk}",
            now=now,
            actor=actor,
        )
        fresh.append(action.replacement_key_id)
    dispute.keys.set(fresh)
    _audit(dispute, action=AuditAction.DISPUTE_REPLACED, now=now, actor=actor, keys=fresh)
    _notify(dispute, event="replaced")
    return dispute


@transaction.atomic
def dispute_refund(*, dispute_pk: int, now: datetime, full: bool = False, actor: User | None = None) -> Dispute:
    """The merchant refunds the disputed keys (or the whole order with `full`) through escrow's refund
    services and the gateway (asked on commit); the dispute is resolved as refunded."""
    dispute = _locked(dispute_pk)
    _move(
        dispute,
        to=DisputeStatus.RESOLVED,
        from_=[DisputeStatus.OPEN],
        outcome=DisputeOutcome.REFUNDED,
        resolved_at=now,
        merchant_answered_at=_first_answer(dispute, now=now),
    )
    _refund_keys(dispute, now=now, actor=actor, full=full)
    _audit(dispute, action=AuditAction.DISPUTE_RESOLVED, now=now, actor=actor, outcome=dispute.outcome, by="merchant")
    _notify(dispute, event="resolved")
    return dispute


@transaction.atomic
def dispute_contest(*, dispute_pk: int, statement: str, now: datetime, actor: User | None = None) -> Dispute:
    """The merchant contests with a statement. The buyer has `DISPUTE_BUYER_HOURS` to answer or escalate:
    if they answered, the dispute goes to staff at the deadline; silence releases the money."""
    statement = _text(statement, field=_("statement"))
    dispute = _locked(dispute_pk)
    if dispute.status == DisputeStatus.OPEN:
        _in_time(dispute, now=now)
    _move(
        dispute,
        to=DisputeStatus.CONTESTED,
        from_=[DisputeStatus.OPEN],
        deadline=now + _hours("DISPUTE_BUYER_HOURS"),
        buyer_answered=False,
        merchant_answered_at=_first_answer(dispute, now=now),
    )
    _note(dispute, role=MessageRole.MERCHANT, body=statement, now=now, author=actor)
    _audit(dispute, action=AuditAction.DISPUTE_CONTESTED, now=now, actor=actor)
    _notify(dispute, event="contested")
    return dispute


# --- messages and staff ---------------------------------------------------------------------------------------


@transaction.atomic
def dispute_message_post(
    *, dispute_pk: int, role: str, body: str, now: datetime, author: User | None = None, question_for: str = ""
) -> DisputeMessage:
    """Add a message from one of the parties or staff to an unresolved dispute. A buyer's message during
    a contest counts as their answer. A staff message with `question_for` ("buyer"/"merchant") is a
    question that restarts that party's clock when it is running."""
    body = _text(body, field=_("message"))
    if role not in {MessageRole.BUYER, MessageRole.MERCHANT, MessageRole.STAFF}:
        raise DisputeError(_("Only the buyer, the merchant or staff may write here."), code="bad_role")
    if question_for and (role != MessageRole.STAFF or question_for not in {MessageRole.BUYER, MessageRole.MERCHANT}):
        raise DisputeError(_("Only staff ask questions, of the buyer or the merchant."), code="bad_question")
    dispute = _locked(dispute_pk)
    if dispute.status == DisputeStatus.RESOLVED:
        raise DisputeError(_("This dispute is resolved."), code="bad_state")
    message = _note(dispute, role=role, body=body, now=now, author=author, question_for=question_for)
    if role == MessageRole.BUYER and dispute.status == DisputeStatus.CONTESTED and not dispute.buyer_answered:
        Dispute.objects.filter(pk=dispute.pk).update(buyer_answered=True)
    if question_for:
        clock = MERCHANT_CLOCK if question_for == MessageRole.MERCHANT else BUYER_CLOCK
        if dispute.status in clock:
            hours = "DISPUTE_MERCHANT_HOURS" if question_for == MessageRole.MERCHANT else "DISPUTE_BUYER_HOURS"
            Dispute.objects.filter(pk=dispute.pk).update(deadline=now + _hours(hours))
        _audit(dispute, action=AuditAction.DISPUTE_QUESTION_ASKED, now=now, actor=author, to=question_for)
    _notify(dispute, event=f"message:{role}")
    return message


@transaction.atomic
def dispute_decide(
    *,
    dispute_pk: int,
    outcome: str,
    reason: str,
    now: datetime,
    actor: User,
    buyer_percent: int | None = None,
) -> Dispute:
    """Staff decide an escalated dispute: a full refund, a full release, or a split giving the buyer
    `buyer_percent` (0 to 100) of the paid amount (escrow's `split_amounts`: fee on the merchant's part only).
    The written reason is required and shown to both parties; the decision is audited with its author.
    Exactly one decision per dispute: a second (or racing) one is refused `bad_state`, moving nothing."""
    if actor is None or not actor.is_staff:
        raise DisputeError(_("Only staff decide disputes."), code="not_staff")
    if outcome not in {"refund", "release", "split"}:
        raise DisputeError(_("Decide refund, release or split."), code="bad_outcome")
    reason = _text(reason, field=_("reason"))
    if outcome == "split":
        if isinstance(buyer_percent, bool) or not isinstance(buyer_percent, int) or not 0 <= buyer_percent <= 100:
            raise DisputeError(_("The buyer's share must be a whole percentage from 0 to 100."), code="bad_percent")
    else:
        buyer_percent = 100 if outcome == "refund" else 0
    dispute = _locked(dispute_pk)
    resolved = {"refund": DisputeOutcome.REFUNDED, "release": DisputeOutcome.RELEASED, "split": DisputeOutcome.SPLIT}
    _move(
        dispute,
        to=DisputeStatus.RESOLVED,
        from_=[DisputeStatus.ESCALATED],
        outcome=resolved[outcome],
        buyer_percent=buyer_percent,
        decision_reason=reason,
        decided_by=actor,
        resolved_at=now,
    )
    cause = f"dispute:{dispute.pk}:decision"
    if outcome == "refund":
        _front(escrow_services.order_dispute_refund, order_pk=dispute.order_id, cause=cause, now=now, actor=actor)
    elif outcome == "release":
        _front(escrow_services.order_dispute_release, order_pk=dispute.order_id, cause=cause, now=now, actor=actor)
    else:
        _front(
            escrow_services.order_dispute_split,
            order_pk=dispute.order_id,
            buyer_percent=buyer_percent,
            cause=cause,
            now=now,
            actor=actor,
        )
    _note(dispute, role=MessageRole.STAFF, body=reason, now=now, author=actor)
    _audit(
        dispute,
        action=AuditAction.DISPUTE_RESOLVED,
        now=now,
        actor=actor,
        outcome=dispute.outcome,
        buyer_percent=buyer_percent,
        reason=reason,
        by="staff",
    )
    _notify(dispute, event="resolved")
    return dispute


# --- deadlines ---------------------------------------------------------------------------------------------


def disputes_sweep(*, now: datetime) -> int:
    """Apply each silence rule to the disputes whose deadline has passed, one transaction per dispute;
    returns how many moved. Merchant silence refunds the disputed keys; buyer silence after a
    replacement, or after a contest they did not answer, releases; an answered contest goes to staff.
    Escalated disputes wait for staff (the queue flags them overdue). Idempotent: a dispute someone
    answered meanwhile is left alone, and a second run moves nothing."""
    due = list(
        Dispute.objects.filter(status__in=[*MERCHANT_CLOCK, *BUYER_CLOCK], deadline__lte=now)
        .order_by("deadline", "pk")
        .values_list("pk", flat=True)
    )
    moved = 0
    for dispute_pk in due:
        try:
            moved += _deadline_apply(dispute_pk=dispute_pk, now=now)
        except DisputeError as refused:  # e.g. the refund gateway path refused: retried on the next run
            logger.warning("disputes.deadline_refused", extra={"dispute": dispute_pk, "code": refused.code})
    return moved


@transaction.atomic
def _deadline_apply(*, dispute_pk: int, now: datetime) -> int:
    dispute = _locked(dispute_pk)
    if dispute.deadline > now or dispute.status not in {*MERCHANT_CLOCK, *BUYER_CLOCK}:
        return 0  # answered or moved meanwhile
    if dispute.status == DisputeStatus.OPEN:
        _move(
            dispute,
            to=DisputeStatus.RESOLVED,
            from_=[DisputeStatus.OPEN],
            outcome=DisputeOutcome.REFUNDED,
            resolved_at=now,
        )
        _refund_keys(dispute, now=now, actor=None, full=False)
    elif dispute.status == DisputeStatus.CONTESTED and dispute.buyer_answered:
        _escalate(dispute, now=now, actor=None)
        return 1
    else:
        _move(
            dispute, to=DisputeStatus.RESOLVED, from_=[dispute.status], outcome=DisputeOutcome.RELEASED, resolved_at=now
        )
        _release(dispute, now=now, actor=None)
    _audit(dispute, action=AuditAction.DISPUTE_RESOLVED, now=now, actor=None, outcome=dispute.outcome, by="deadline")
    _notify(dispute, event="resolved")
    return 1


# --- what the services share ------------------------------------------------------------------------------


def _escalate(dispute: Dispute, *, now: datetime, actor: User | None) -> None:
    _move(
        dispute,
        to=DisputeStatus.ESCALATED,
        from_=[DisputeStatus.CONTESTED, DisputeStatus.REPLACED],
        escalated_at=now,
        deadline=now + _hours("DISPUTE_ARBITRATION_HOURS"),
    )
    _audit(dispute, action=AuditAction.DISPUTE_ESCALATED, now=now, actor=actor)
    _notify(dispute, event="escalated")


def _release(dispute: Dispute, *, now: datetime, actor: User | None) -> None:
    _front(
        escrow_services.order_dispute_release,
        order_pk=dispute.order_id,
        cause=f"dispute:{dispute.pk}:release",
        now=now,
        actor=actor,
    )


def _refund_keys(dispute: Dispute, *, now: datetime, actor: User | None, full: bool) -> None:
    """Refund the disputed keys (the whole order when they are all its keys, or with `full`)."""
    keys = _key_pks(dispute)
    on_order = set(
        CardKey.objects.filter(order_id=dispute.order_id, status=CardKeyStatus.SOLD).values_list("pk", flat=True)
    )
    _front(
        escrow_services.order_dispute_refund,
        order_pk=dispute.order_id,
        cause=f"dispute:{dispute.pk}:refund",
        now=now,
        key_pks=None if full or set(keys) >= on_order else keys,
        actor=actor,
    )


# --- notifications ---------------------------------------------------------------------------------------


def dispute_notify(*, dispute_pk: int, event: str) -> None:
    """E-mail the buyer and the merchant that something happened on their dispute (sent after the
    commit that made it happen, by `disputes.tasks.dispute_notify_task`); the message itself stays on
    the dispute, so a lost e-mail loses nothing. The buyer's copy is in the language they checked out
    in, as text and HTML, with a fresh link to their order page."""
    from django.utils import translation
    from django.utils.html import escape, linebreaks

    from core.mail import mail_send

    dispute = Dispute.objects.select_related("order__merchant__user", "order__product").get(pk=dispute_pk)
    order = dispute.order
    header_event = f"dispute.{event.split(':')[0]}"
    if order.email:
        link = escrow_services.order_link(order.pk)
        with translation.override(order.language or settings.LANGUAGE_CODE):
            subject, body = _dispute_mail(dispute, event)
            body += "\n\n" + _("Your order and the dispute:") + "\n" + link
            html = linebreaks(escape(body)).replace(escape(link), f'<a href="{escape(link)}">{escape(link)}</a>')
        mail_send(event=header_event, subject=subject, body=body, html=html, to=[order.email])
    if order.merchant.user.email:
        subject, body = _dispute_mail(dispute, event)
        mail_send(event=header_event, subject=subject, body=body, to=[order.merchant.user.email])


def _dispute_mail(dispute: Dispute, event: str) -> tuple[str, str]:
    """Subject and text of a dispute e-mail, in the active language."""
    order = dispute.order
    subjects = {
        "opened": _("A dispute was opened on order %(order)s"),
        "replaced": _("A replacement key was sent for order %(order)s"),
        "reopened": _("The dispute on order %(order)s was reopened"),
        "contested": _("The merchant contested the dispute on order %(order)s"),
        "escalated": _("The dispute on order %(order)s went to staff"),
        "resolved": _("The dispute on order %(order)s is resolved"),
    }
    subject = subjects.get(event, _("A new message on the dispute about order %(order)s")) % {"order": order.pk}
    body = _("Status: %(status)s. Deadline: %(deadline)s UTC.") % {
        "status": dispute.get_status_display(),
        "deadline": dispute.deadline.strftime("%Y-%m-%d %H:%M"),
    }
    if dispute.status == DisputeStatus.RESOLVED:
        body += "\n" + _("Outcome: %(outcome)s.") % {"outcome": dispute.get_outcome_display()}
        if dispute.decision_reason:
            body += "\n" + dispute.decision_reason
    return subject, body
