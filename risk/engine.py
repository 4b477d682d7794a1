"""The engine: one call per act, one stored decision with every reason.

    decision = risk.assess(event="checkout", context=RiskContext(...), subject=None, now=now)

In order: count the act in its sliding windows; an account frozen by an earlier decision stays frozen
for buying and withdrawing; the block list; then the active rules of the event, harshest outcome first
(freeze/block, review, challenge, allow) and by pk, the first that matches decides; nothing matching
allows. The decision row keeps the event, outcome, anomaly score, the deciding rule and every signal
value computed, and names its subject (order, withdrawal, dispute, user, merchant) when known.
"""

import hashlib
from datetime import datetime

from django.db import transaction

from risk.blocklist import blocklist_match
from risk.context import EVENTS, Outcome, RiskContext
from risk.models import Decision, ReviewItem, ReviewKind, ReviewStatus, Rule, SeenIdentity
from risk.signals import ANOMALY_WEIGHTS, EMAIL_DIMENSIONS, EMAIL_EVENTS, Signals
from risk.velocity import Velocity, counter_key

# A frozen account may still sign in (to see its orders) but not buy, withdraw or change payouts.
FROZEN_EVENTS = frozenset({"checkout", "withdrawal", "payout_account_change"})
# What every decision keeps even when no rule asks for it.
ALWAYS = ("amount", "quantity", "new_device", "new_network", *ANOMALY_WEIGHTS, "anomaly_score")
# Acts that come from a gateway, not a person: nothing new is learnt about devices or velocity there
# (the person's identities are the checkout's), so only the rules' own signals are computed.
SECOND_HAND = frozenset({"payment"})


def _record(signals: Signals, event: str, context: RiskContext, now: datetime) -> None:
    with Velocity(now) as velocity:
        for counter in (event, *context.count_as):
            for dimension, value in signals.identities.items():
                velocity.record(key=counter_key("v", counter, dimension, value), weight=max(context.quantity or 1, 1))
        email = signals.identities.get("email")
        if event in EMAIL_EVENTS and email:
            member = hashlib.sha256(email.encode()).hexdigest()[:24]
            for dimension in EMAIL_DIMENSIONS:
                if dimension in signals.identities:
                    velocity.record(
                        key=counter_key("e", "any", dimension, signals.identities[dimension]), member=member
                    )


def _seen_record(signals: Signals, now: datetime) -> None:
    actor = signals.context.actor_key
    rows = [
        SeenIdentity(actor=actor, kind=kind, value=signals.identities[kind], first_seen=now, last_seen=now)
        for kind in ("device", "network")
        if kind in signals.identities
    ]
    if actor and rows:
        SeenIdentity.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["actor", "kind", "value"], update_fields=["last_seen"]
        )


def account_frozen(user_pk: int) -> bool:
    """A freeze holds while its review item is open, and after staff rejected it ("keep frozen")."""
    return ReviewItem.objects.filter(
        kind=ReviewKind.USER, subject_id=str(user_pk), status__in=[ReviewStatus.OPEN, ReviewStatus.REJECTED]
    ).exists()


@transaction.atomic(savepoint=False)  # inside a caller's transaction it is one of its steps
def assess(
    *, event: str, context: RiskContext, subject: tuple[str, int | str] | None = None, now: datetime
) -> Decision:
    """Decide one act and store the decision with its reasons. Never raises for a risky act: the
    caller reads `decision.outcome` (or lets `decision_enforce` refuse it)."""
    if event not in EVENTS:
        raise ValueError(f"unknown risk event {event!r}")
    subject_key = (subject[0], str(subject[1])) if subject else None
    signals = Signals(event=event, context=context, subject=subject_key, now=now)
    first_hand = event not in SECOND_HAND
    if first_hand:
        _record(signals, event, context, now)
    rules = sorted(
        Rule.objects.filter(event=event, is_active=True), key=lambda rule: (Outcome.ORDER.index(rule.outcome), rule.pk)
    )
    signals.prefetch([*(rule.signal for rule in rules), *(ALWAYS if first_hand else ())])

    outcome, deciding, reasons = Outcome.ALLOW, None, []
    frozen = context.actor_id is not None and event in FROZEN_EVENTS and account_frozen(context.actor_id)
    blocked = None if frozen else blocklist_match(context=context, now=now)
    if frozen:
        outcome = Outcome.FREEZE
        reasons = [{"rule": "account_frozen", "signal": "account_frozen", "value": 1, "threshold": 1}]
    elif blocked is not None:
        entry, value = blocked
        outcome = Outcome.BLOCK
        reasons = [
            {
                "rule": f"block_list:{entry.pk}",
                "signal": f"block_list.{entry.kind}",
                "value": value,
                "threshold": entry.value if entry.kind != "payout_account" else "…",
                "reason": entry.reason,
            }
        ]
    else:
        for rule in rules:
            value = signals.get(rule.signal)
            if rule.matches(value):
                outcome, deciding = rule.outcome, rule
                reasons = [
                    {
                        "rule": rule.pk,
                        "signal": rule.signal,
                        "value": value,
                        "threshold": rule.threshold,
                        "comparison": rule.comparison,
                        "description": rule.description,
                    }
                ]
                break

    decision = Decision.objects.create(
        at=now,
        event=event,
        outcome=outcome,
        score=int(signals.values.get("anomaly_score") or 0),
        rule=deciding,
        reasons=reasons,
        signals=signals.values,
        subject_type=subject_key[0] if subject_key else "",
        subject_id=subject_key[1] if subject_key else "",
        actor=context.actor_key,
        email=context.email.strip().lower()[:254],
        ip=context.ip or None,
        network=signals.identities.get("network", ""),
        device=context.device[:64],
        amount=context.amount,
        currency=context.currency,
    )
    if first_hand:
        _seen_record(signals, now)
    if outcome == Outcome.FREEZE and context.actor_id is not None and not frozen:
        from risk.services import review_open

        review_open(kind=ReviewKind.USER, subject_id=context.actor_id, email=context.email, decision=decision, now=now)
    return decision
