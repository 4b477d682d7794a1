"""Every write of the risk app besides `assess` itself: enforcing a decision, naming its subject, the
review queue and its decisions, raised merchant reserves, rule and block-list changes (audited)."""

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils.translation import gettext as _

from core import prepared
from core.errors import Refused
from core.transitions import StateError
from risk.audit import risk_audit
from risk.context import Outcome, RiskContext
from risk.engine import assess
from risk.models import (
    REVIEW_TRANSITIONS,
    BlockEntry,
    Decision,
    MerchantReserve,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    Rule,
)
from risk.velocity import Velocity, counter_key

logger = logging.getLogger(__name__)


class RiskRefused(Refused):
    """The engine said challenge (and none was passed) or block/freeze: 403 with the decision's id.

    The message is neutral on purpose: it tells a fraudster nothing about which rule fired."""

    status_code = 403

    def __init__(self, message: str, code: str, decision_pk: int):
        super().__init__(message, code=code)
        self.decision_pk = decision_pk
        self.extra = {"decision": decision_pk}


def decision_enforce(*, decision: Decision, challenge_passed: bool = False) -> Decision:
    """Raise `RiskRefused` for a decision that refuses the act; return it otherwise (allow, review, or a
    challenge the person has just passed: the caller's captcha or second factor)."""
    if decision.outcome in Outcome.REFUSING:
        raise RiskRefused(
            _("Sorry, we cannot accept this request. If you think this is a mistake, please contact support."),
            code="risk_blocked",
            decision_pk=decision.pk,
        )
    if decision.outcome == Outcome.CHALLENGE and not challenge_passed:
        raise RiskRefused(
            _("Please confirm you are not a robot, then try again."), code="challenge_required", decision_pk=decision.pk
        )
    return decision


def decision_subject_set(*, decision: Decision, subject: tuple[str, int | str], challenge_passed: bool = False) -> None:
    """Link a decision made before its subject existed (a checkout's order) to that subject."""
    Decision.objects.filter(pk=decision.pk).update(
        subject_type=subject[0], subject_id=str(subject[1]), challenge_passed=challenge_passed
    )


# The first 20 decisions about a subject by pk: the first one's identities, and whether any asked for
# review. ONE value (a text[]: actor, e-mail, address, network, device, "true"/"false"), NULL for none.
_SUBJECT_READ = (
    "(SELECT ARRAY[actor, email, host(ip), network, device, (bool_or(outcome IN (%s, %s)) OVER ())::text] "
    "FROM (SELECT id, actor, email, ip, network, device, outcome FROM risk_decision "
    "WHERE subject_type = %s AND subject_id = {subject_id} ORDER BY id LIMIT 20) d ORDER BY id LIMIT 1)"
)


def subject_context_sql(*, subject_type: str, subject_id_sql: str) -> tuple[str, list]:
    """`subject_context`'s read as ONE scalar SQL expression and its parameters, for a caller that
    sends a statement anyway (the payment webhook's lock, escrow/services.py): `subject_id_sql` is the
    subject's id as an SQL expression of the caller's (a column of its row, as text; never input).
    Hand the expression's value to `subject_context_from`."""
    return _SUBJECT_READ.format(subject_id=subject_id_sql), [Outcome.REVIEW, Outcome.FREEZE, subject_type]


def subject_context_from(value: list | None, **fields) -> RiskContext | None:
    """The context `subject_context` gives, from the value of `subject_context_sql`."""
    if value is None:
        return None
    actor, email, ip, network, device, flagged = value
    actor_id = int(actor.removeprefix("user:")) if actor.startswith("user:") else None
    extra = {**fields.pop("extra", {}), "subject_flagged": int(flagged == "true")}
    return RiskContext(
        actor_id=actor_id, email=email, ip=ip or "", network=network, device=device, extra=extra, **fields
    )


def subject_context(subject: tuple[str, int | str], **fields) -> RiskContext | None:
    """The identities (e-mail, IP, device, actor) of the first decision about `subject`: how a
    payment or a failure, which come from the gateway, is tied to the person who checked out. Its
    `extra["subject_flagged"]` says whether any decision about the subject asked for review. On
    PostgreSQL one plain statement (its text built once), elsewhere the ORM."""
    if connection.vendor == "postgresql":
        expression, params = _subject_read_text()
        with connection.cursor() as cursor:
            prepared.execute(cursor, expression, [*params, subject[0], str(subject[1])])
            return subject_context_from(cursor.fetchone()[0], **fields)
    decisions = list(
        Decision.objects.filter(subject_type=subject[0], subject_id=str(subject[1]))
        .order_by("pk")
        .values("actor", "email", "ip", "network", "device", "outcome")[:20]
    )
    if not decisions:
        return None
    first = decisions[0]
    flagged = any(row["outcome"] in {Outcome.REVIEW, Outcome.FREEZE} for row in decisions)
    value = [first[name] for name in ("actor", "email", "ip", "network", "device")]
    return subject_context_from([*value, "true" if flagged else "false"], **fields)


@functools.cache
def _subject_read_text() -> tuple[str, list]:
    expression, params = subject_context_sql(subject_type="", subject_id_sql="%s")
    return f"SELECT {expression}", params[:-1]  # the subject's type and id are the caller's


def outcome_note(*, counter: str, subject: tuple[str, int | str], now: datetime) -> None:
    """Count something that happened to an earlier act (a payment that failed) against the identities
    of that act, so rules can say "5 failed payments from this device in an hour"."""
    outcome_count(counter=counter, context=subject_context(subject), now=now)


def outcome_count(*, counter: str, context: RiskContext | None, now: datetime) -> None:
    """`outcome_note` with the act's context already read (`subject_context_from`; None: no act)."""
    if context is None:
        return
    with Velocity(now) as velocity:
        for dimension, value in context.identities().items():
            velocity.record(key=counter_key("v", counter, dimension, value))


# --- the review queue -----------------------------------------------------------------------------


@transaction.atomic
def review_open(
    *,
    kind: str,
    subject_id: int | str,
    now: datetime,
    email: str = "",
    decision: Decision | None = None,
    reasons: list[dict[str, Any]] | None = None,
) -> ReviewItem:
    """Put a subject in front of staff, once: an open item for the same subject is returned as it is."""
    open_item = ReviewItem.objects.filter(kind=kind, subject_id=str(subject_id), status=ReviewStatus.OPEN).first()
    if open_item is not None:
        return open_item
    try:
        with transaction.atomic():
            item = ReviewItem.objects.create(
                kind=kind,
                subject_id=str(subject_id),
                email=email[:254],
                decision=decision,
                reasons=reasons if reasons is not None else (decision.reasons if decision else []),
                created_at=now,
            )
    except IntegrityError:  # opened by a concurrent caller between the read and the insert
        return ReviewItem.objects.get(kind=kind, subject_id=str(subject_id), status=ReviewStatus.OPEN)
    risk_audit(action="risk.review_opened", subject=item, now=now, data={"kind": kind, "subject": str(subject_id)})
    logger.info("risk.review_opened", extra={"item": item.pk, "kind": kind})
    return item


@dataclass(frozen=True)
class ReviewHandler:
    """What approving or rejecting an item of one kind does, supplied by the app that owns the subject
    (escrow registers orders and withdrawals in its AppConfig.ready). Each runs its own transaction,
    must be safe to run again after it succeeded, and raises a `Refused` to stop the decision."""

    approve: Callable[..., None]
    reject: Callable[..., None]


REVIEW_HANDLERS: dict[str, ReviewHandler] = {}


def review_handler_register(kind: str, *, approve: Callable[..., None], reject: Callable[..., None]) -> None:
    REVIEW_HANDLERS[kind] = ReviewHandler(approve=approve, reject=reject)


class ReviewRefused(Refused):
    code_statuses = {**Refused.code_statuses, "already_decided": 409}


def review_decide(
    *, item_pk: int, approve: bool, staff, now: datetime, note: str = "", params: dict[str, Any] | None = None
) -> ReviewItem:
    """Staff approve or reject a review item, through its owner's services, exactly once.

    The same decision again returns the item as decided (idempotent); the other decision on a decided
    item is refused (`already_decided`, 409). The owner's service runs first; only when it succeeded
    is the item marked decided, so a crash between the two is finished by a retry (the handlers are
    safe to run twice)."""
    item = ReviewItem.objects.filter(pk=item_pk).first()
    if item is None:
        raise ReviewRefused(_("No such review item."), code="not_found")
    wanted = ReviewStatus.APPROVED if approve else ReviewStatus.REJECTED
    if item.status == wanted:
        return item
    if item.status != ReviewStatus.OPEN:
        raise ReviewRefused(_("This item was already decided the other way."), code="already_decided")
    handler = REVIEW_HANDLERS.get(item.kind)
    if handler is not None:
        (handler.approve if approve else handler.reject)(item=item, staff=staff, note=note, now=now, **(params or {}))
    with transaction.atomic():
        try:
            REVIEW_TRANSITIONS.apply(
                model=ReviewItem,
                pk=item.pk,
                to=wanted,
                from_=[ReviewStatus.OPEN],
                decided_at=now,
                decided_by=staff,
                note=note[:500],
            )
        except StateError:
            item.refresh_from_db()
            if item.status == wanted:
                return item
            raise ReviewRefused(_("This item was already decided the other way."), code="already_decided") from None
        if item.kind == ReviewKind.MERCHANT and approve:
            MerchantReserve.objects.filter(merchant_id=int(item.subject_id), lifted_at__isnull=True).update(
                lifted_at=now
            )
        risk_audit(
            action="risk.review_approved" if approve else "risk.review_rejected",
            subject=item,
            now=now,
            actor=staff,
            data={"kind": item.kind, "subject": item.subject_id, "note": note[:500]},
        )
    item.refresh_from_db()
    logger.info("risk.review_decided", extra={"item": item.pk, "approved": approve})
    return item


def review_settled_elsewhere(
    *, kind: str, subject_id: int | str, approve: bool, staff, now: datetime, note: str = ""
) -> int:
    """The subject was decided on its owner's own page (escrow's held-order review, say), not from the
    queue: its open item, if any, is marked decided the same way, so it does not linger. No handler
    runs (the owner has just done the work); deciding it from the queue afterwards is the no-op
    `review_decide` gives a decided item. Returns how many items it closed (0 or 1)."""
    return REVIEW_TRANSITIONS.update(
        queryset=ReviewItem.objects.filter(kind=kind, subject_id=str(subject_id)),
        to=ReviewStatus.APPROVED if approve else ReviewStatus.REJECTED,
        from_=[ReviewStatus.OPEN],
        decided_at=now,
        decided_by=staff,
        note=(note or "")[:500],
    )


# --- merchants: dispute rate and the rolling reserve -------------------------------------------------


def merchant_reserve_percents(merchant_pks) -> dict[int, Decimal]:
    """The raised reserve of each of these merchants that has one (others: the shop's usual rule)."""
    return dict(
        MerchantReserve.objects.filter(merchant_id__in=list(merchant_pks), lifted_at__isnull=True).values_list(
            "merchant_id", "reserve_percent"
        )
    )


def merchant_reserve_percent(merchant_pk: int) -> Decimal | None:
    return merchant_reserve_percents([merchant_pk]).get(merchant_pk)


@dataclass(frozen=True)
class MerchantCheck:
    decision: Decision
    flagged: bool  # the merchant was flagged now (and their reserve raised) by this check


@transaction.atomic
def merchant_dispute_check(
    *, merchant_pk: int, orders_30d: int, disputes_30d: int, used_disputes_30d: int, now: datetime
) -> MerchantCheck:
    """Assess a merchant's dispute rate (event `dispute`, subject the merchant). A `review` (the default
    rules: "already used" disputes on ≥ RISK_MERCHANT_DISPUTE_PERCENT % of ≥ RISK_MERCHANT_MIN_ORDERS
    orders in 30 days) raises their rolling reserve to RISK_RAISED_RESERVE_PERCENT and opens a review
    item, once; the caller alerts staff when `flagged`."""
    decision = assess(
        event="dispute",
        context=RiskContext(
            merchant_id=merchant_pk,
            extra={
                "merchant_orders_30d": orders_30d,
                "merchant_disputes_30d": disputes_30d,
                "merchant_used_disputes_30d": used_disputes_30d,
            },
        ),
        subject=("merchant", merchant_pk),
        now=now,
    )
    if decision.outcome not in {Outcome.REVIEW, *Outcome.REFUSING}:
        return MerchantCheck(decision=decision, flagged=False)
    already = ReviewItem.objects.filter(
        kind=ReviewKind.MERCHANT, subject_id=str(merchant_pk), status=ReviewStatus.OPEN
    ).exists()
    if not MerchantReserve.objects.filter(merchant_id=merchant_pk, lifted_at__isnull=True).exists():
        MerchantReserve.objects.create(
            merchant_id=merchant_pk,
            reserve_percent=Decimal(settings.RISK_RAISED_RESERVE_PERCENT),
            reason=f"decision {decision.pk}",
            raised_at=now,
        )
    item = review_open(kind=ReviewKind.MERCHANT, subject_id=merchant_pk, decision=decision, now=now)
    if not already:
        risk_audit(
            action="risk.reserve_raised",
            subject=item,
            now=now,
            data={"merchant": merchant_pk, "reserve_percent": str(settings.RISK_RAISED_RESERVE_PERCENT)},
        )
    return MerchantCheck(decision=decision, flagged=not already)


# --- rules and the block list, as staff edit them ------------------------------------------------------


def _rule_fields(rule: Rule) -> dict[str, Any]:
    return {
        "event": rule.event,
        "signal": rule.signal,
        "comparison": rule.comparison,
        "threshold": rule.threshold,
        "outcome": rule.outcome,
        "is_active": rule.is_active,
        "description": rule.description,
    }


@transaction.atomic
def rule_save(*, rule: Rule, actor, now: datetime) -> Rule:
    """Create or change a rule, with an audit line holding what it was and what it became."""
    before = _rule_fields(Rule.objects.get(pk=rule.pk)) if rule.pk else None
    rule.save()
    risk_audit(
        action="risk.rule_changed",
        subject=rule,
        now=now,
        actor=actor,
        data={"before": before, "after": _rule_fields(rule)},
    )
    return rule


@transaction.atomic
def rule_delete(*, rule: Rule, actor, now: datetime) -> None:
    risk_audit(
        action="risk.rule_changed",
        subject=rule,
        now=now,
        actor=actor,
        data={"before": _rule_fields(rule), "after": None},
    )
    rule.delete()


@transaction.atomic
def block_entry_save(*, entry: BlockEntry, actor, now: datetime) -> BlockEntry:
    from risk.blocklist import normalise

    entry.value = normalise(entry.kind, entry.value)
    entry.save()
    risk_audit(
        action="risk.block_list_changed",
        subject=entry,
        now=now,
        actor=actor,
        data={"kind": entry.kind, "reason": entry.reason, "expires_at": str(entry.expires_at or "")},
    )
    return entry
