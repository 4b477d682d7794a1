"""The ledger's invariants (DESIGN.md), checked from the transfers themselves."""

import logging
from collections import defaultdict
from datetime import datetime

from django.db.models import Q, Sum

from core.metrics import metric_set
from escrow import ledger
from escrow.models import (
    AccountKind,
    Clawback,
    ClawbackKind,
    DisputeAction,
    DisputeActionKind,
    LedgerAccount,
    Order,
    OrderStatus,
    Refund,
    RefundStatus,
    ReserveHold,
    Transfer,
    TransferKind,
    Withdrawal,
    WithdrawalStatus,
)

logger = logging.getLogger(__name__)

SETTLED = [OrderStatus.COMPLETED, OrderStatus.REFUNDED, OrderStatus.PARTIALLY_REFUNDED]


def _replayed_balances() -> dict[int, dict[str, int]]:
    balances: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    pending_amounts = dict(Transfer.objects.filter(kind=TransferKind.PENDING).values_list("pk", "amount"))
    for kind, debit, credit, amount, pending_pk in Transfer.objects.values_list(
        "kind", "debit_account_id", "credit_account_id", "amount", "pending_id"
    ).iterator(chunk_size=5000):
        if kind == TransferKind.SINGLE:
            balances[debit]["debits_posted"] += amount
            balances[credit]["credits_posted"] += amount
        elif kind == TransferKind.PENDING:
            balances[debit]["debits_pending"] += amount
            balances[credit]["credits_pending"] += amount
        else:
            reserved = pending_amounts[pending_pk]
            balances[debit]["debits_pending"] -= reserved
            balances[credit]["credits_pending"] -= reserved
            if kind == TransferKind.POST_PENDING:
                balances[debit]["debits_posted"] += amount
                balances[credit]["credits_posted"] += amount
    return balances


def ledger_problems() -> list[str]:
    """Every broken invariant, in words; an empty list means the books balance."""
    problems: list[str] = []
    fields = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")

    replay = _replayed_balances()
    for account in LedgerAccount.objects.order_by("pk"):
        for name in fields:
            if getattr(account, name) != replay[account.pk][name]:
                problems.append(
                    f"Account {account}: cached {name} {getattr(account, name)} != replayed {replay[account.pk][name]}."
                )

    totals = LedgerAccount.objects.values("currency").annotate(
        dp=Sum("debits_posted"), cp=Sum("credits_posted"), dq=Sum("debits_pending"), cq=Sum("credits_pending")
    )
    for row in totals:
        if row["dp"] != row["cp"] or row["dq"] != row["cq"]:
            problems.append(
                f"{row['currency']}: debits {row['dp']}+{row['dq']} pending != credits {row['cp']}+{row['cq']} pending."
            )

    # Below zero only by what was taken back after release (a chargeback, a refund of a completed order).
    clawed = _sums(Clawback.objects.all(), "merchant_id", "currency")
    for account in LedgerAccount.objects.filter(kind=AccountKind.MERCHANT_AVAILABLE):
        available = ledger.available_of(account)
        if available < -clawed.get((account.merchant_id, account.currency), 0):
            problems.append(f"Account {account}: available balance is {available}, below zero.")

    for post in Transfer.objects.filter(kind=TransferKind.POST_PENDING).select_related("pending"):
        if post.amount > post.pending.amount:
            problems.append(f"Transfer {post.transfer_id} posts {post.amount} of pending {post.pending.amount}.")

    open_holds = defaultdict(int)
    for currency, amount in Transfer.objects.filter(
        kind=TransferKind.PENDING, debit_account__kind=AccountKind.ESCROW, resolutions__isnull=True
    ).values_list("currency", "amount"):
        open_holds[currency] += amount
    for escrow in LedgerAccount.objects.filter(kind=AccountKind.ESCROW):
        held = open_holds[escrow.currency]
        if escrow.credit_balance != held:
            problems.append(f"Escrow {escrow.currency}: balance {escrow.credit_balance} != open holds {held}.")

    problems.extend(_settled_order_problems())
    problems.extend(_reserve_problems())
    problems.extend(_withdrawal_problems())
    problems.extend(_refund_problems())
    problems.extend(_dispute_problems())
    problems.extend(_clawback_problems())
    return problems


def ledger_verify_record(*, now: datetime) -> list[str]:
    """Check the ledger and record the result for /metrics (cardshop_ledger_verify_*); returns the problems."""
    problems = ledger_problems()
    metric_set("ledger_verify", {"field": "problems"}, value=len(problems))
    metric_set("ledger_verify", {"field": "last_run"}, value=now.timestamp())
    if problems:
        logger.error("escrow.ledger_verify_failed", extra={"problems": len(problems), "first": problems[0]})
    return problems


def _sums(queryset, *keys: str) -> dict[tuple, int]:
    return {tuple(row[k] for k in keys): row["total"] for row in queryset.values(*keys).annotate(total=Sum("amount"))}


def _reserve_problems() -> list[str]:
    """Each merchant's reserve balance equals their unreleased reserve holds."""
    problems = []
    held = _sums(ReserveHold.objects.filter(released_at__isnull=True), "merchant_id", "currency")
    for account in LedgerAccount.objects.filter(kind=AccountKind.MERCHANT_RESERVE):
        expected = held.get((account.merchant_id, account.currency), 0)
        if account.credit_balance != expected or account.credits_pending or account.debits_pending:
            problems.append(f"Account {account}: reserve balance {account.credit_balance} != open holds {expected}.")
    return problems


def _withdrawal_problems() -> list[str]:
    """Payouts pending = withdrawals waiting; payouts posted = withdrawals paid."""
    problems = []
    # A withdrawal held by risk (pending_review) holds its money exactly as a request does.
    holding = [WithdrawalStatus.REQUESTED, WithdrawalStatus.PENDING_REVIEW]
    waiting = _sums(Withdrawal.objects.filter(status__in=holding), "currency")
    paid = _sums(Withdrawal.objects.filter(status=WithdrawalStatus.PAID), "currency")
    for account in LedgerAccount.objects.filter(kind=AccountKind.PAYOUTS):
        key = (account.currency,)
        if account.credits_pending != waiting.get(key, 0) or account.credit_balance != paid.get(key, 0):
            problems.append(
                f"Payouts {account.currency}: pending {account.credits_pending} / paid {account.credit_balance} "
                f"!= withdrawals waiting {waiting.get(key, 0)} / paid {paid.get(key, 0)}."
            )
    resolutions = Transfer.objects.filter(code="withdrawal").exclude(kind=TransferKind.PENDING)
    resolved = set(resolutions.values_list("transfer_id", flat=True))
    suffix = {WithdrawalStatus.PAID: "post", WithdrawalStatus.REJECTED: "void"}
    for pk, status in Withdrawal.objects.exclude(status__in=holding).values_list("pk", "status"):
        if f"withdrawal:{pk}:{suffix[status]}" not in resolved:
            problems.append(f"Withdrawal {pk} is {status} but its pending transfer was not resolved that way.")
    return problems


def _refund_problems() -> list[str]:
    """Refunds owed = refunds not yet confirmed; each refund is booked once, for its amount."""
    problems = []
    owed = _sums(Refund.objects.filter(status=RefundStatus.REQUESTED), "currency")
    for account in LedgerAccount.objects.filter(kind=AccountKind.BUYER_REFUNDS_PAYABLE):
        if account.credit_balance != owed.get((account.currency,), 0):
            problems.append(
                f"Refunds payable {account.currency}: {account.credit_balance} != refunds awaiting the gateway "
                f"{owed.get((account.currency,), 0)}."
            )
    booked = dict(Transfer.objects.filter(code="refund").values_list("transfer_id", "amount"))
    paid = set(Transfer.objects.filter(code="refund_paid").values_list("transfer_id", flat=True))
    for pk, amount, status in Refund.objects.values_list("pk", "amount", "status").iterator(chunk_size=2000):
        if booked.get(f"refund:{pk}") != amount:
            problems.append(f"Refund {pk}: booked {booked.get(f'refund:{pk}')} out of escrow, not {amount}.")
        if (status == RefundStatus.SUCCEEDED) != (f"refund:{pk}:paid" in paid):
            problems.append(f"Refund {pk}: status {status} does not match its paid transfer.")
    return problems


def _settled_order_problems() -> list[str]:
    problems = []
    sums = (
        Order.objects.filter(status__in=SETTLED)
        .annotate(
            paid=Sum("transfers__amount", filter=Q(transfers__code="payment", transfers__kind=TransferKind.SINGLE)),
            paid_out=Sum(
                "transfers__amount",
                filter=Q(
                    transfers__debit_account__kind=AccountKind.ESCROW,
                    transfers__kind__in=[TransferKind.SINGLE, TransferKind.POST_PENDING],
                ),
            ),
            # A payment held for review sits in suspense; rejected, all of it goes back from there.
            held=Sum("transfers__amount", filter=Q(transfers__code="payment_mismatch")),
            returned=Sum("transfers__amount", filter=Q(transfers__debit_account__kind=AccountKind.SUSPENSE)),
            # Taken back after release (escrow/clawbacks.py): it came into escrow and went out again.
            clawed=Sum("transfers__amount", filter=Q(transfers__code__in=["clawback_share", "clawback_fee"])),
        )
        .values_list("pk", "amount", "paid", "paid_out", "held", "returned", "clawed")
    )
    for pk, amount, paid, paid_out, held, returned, clawed in sums.iterator(chunk_size=2000):
        paid_out = (paid_out or 0) - (clawed or 0)
        if paid is None and held:
            if returned != held or paid_out:
                problems.append(f"Order {pk}: rejected in review, {held} came in but {returned} went back.")
        elif (paid or 0) != amount:
            problems.append(f"Order {pk}: settled, but the buyer's payment recorded is {paid}, not {amount}.")
        elif (paid_out or 0) != amount:
            problems.append(f"Order {pk}: merchant share + fee + refunds = {paid_out}, but the buyer paid {amount}.")
    open_on_settled = Transfer.objects.filter(
        order__status__in=SETTLED, kind=TransferKind.PENDING, resolutions__isnull=True
    ).values_list("transfer_id", flat=True)
    problems.extend(f"Transfer {tid} is still pending on a settled order." for tid in open_on_settled)
    return problems


DECISIONS = [DisputeActionKind.RELEASE, DisputeActionKind.REFUND, DisputeActionKind.SPLIT]


def _dispute_problems() -> list[str]:
    """A disputed order has released no money; every decided dispute's money adds up to what was paid,
    each part as the ledger booked it."""
    problems = []
    moved = Transfer.objects.filter(order__status=OrderStatus.DISPUTED).filter(
        Q(kind__in=[TransferKind.POST_PENDING, TransferKind.VOID_PENDING])
        | Q(kind=TransferKind.SINGLE, debit_account__kind=AccountKind.ESCROW)
    )
    for order_pk, transfer_id in moved.values_list("order_id", "transfer_id"):
        problems.append(f"Order {order_pk} is disputed, but {transfer_id} moved its money out of escrow.")

    decisions = DisputeAction.objects.filter(kind__in=DECISIONS)
    posted: dict[int, dict[str, int]] = defaultdict(dict)
    for order_pk, code, amount in Transfer.objects.filter(
        order_id__in=decisions.values("order_id"),
        kind=TransferKind.POST_PENDING,
        debit_account__kind=AccountKind.ESCROW,
    ).values_list("order_id", "code", "amount"):
        posted[order_pk][code] = amount
    for action in decisions.select_related("order", "refund").iterator(chunk_size=2000):
        order, posts = action.order, posted[action.order_id]
        booked = (action.refund.amount if action.refund else 0, posts.get("share", 0), posts.get("fee", 0))
        recorded = (action.refund_amount, action.share, action.fee)
        if order.status not in SETTLED:
            problems.append(f"Dispute decision {action.cause}: order {order.pk} is {order.status}, not settled.")
        if sum(recorded) != order.amount:
            problems.append(
                f"Dispute decision {action.cause}: refund {recorded[0]} + share {recorded[1]} + fee {recorded[2]} "
                f"!= paid {order.amount}."
            )
        if booked != recorded:
            problems.append(f"Dispute decision {action.cause}: recorded {recorded}, but the ledger booked {booked}.")
    return problems


def _clawback_problems() -> list[str]:
    """Every clawback is share + fee = amount, each part booked as recorded, the money out of escrow to
    where it went (the provider, or the refund); no order gives back more share or fee than it released;
    its order is settled."""
    problems = []
    booked = dict(
        Transfer.objects.filter(code__in=["clawback_share", "clawback_fee", "chargeback"]).values_list(
            "transfer_id", "amount"
        )
    )
    refunds = dict(Transfer.objects.filter(code="refund").values_list("transfer_id", "amount"))
    released: dict[tuple[int, str], int] = defaultdict(int)
    for order_pk, code, amount in (
        Transfer.objects.filter(
            order__clawbacks__isnull=False,
            kind=TransferKind.POST_PENDING,
            debit_account__kind=AccountKind.ESCROW,
            code__in=["share", "fee"],
        )
        .distinct()
        .values_list("order_id", "code", "amount")
    ):
        released[(order_pk, code)] += amount
    taken: dict[tuple[int, str], int] = defaultdict(int)
    for c in Clawback.objects.select_related("order").iterator(chunk_size=2000):
        name = f"Clawback {c.pk} ({c.kind} of order {c.order_id})"
        taken[(c.order_id, "share")] += c.share
        taken[(c.order_id, "fee")] += c.fee
        if c.share + c.fee != c.amount:
            problems.append(f"{name}: share {c.share} + fee {c.fee} != {c.amount}.")
        for part, code in ((c.share, "share"), (c.fee, "fee")):
            if booked.get(f"clawback:{c.pk}:{code}", 0) != part:
                problems.append(f"{name}: {code} {part} recorded, {booked.get(f'clawback:{c.pk}:{code}')} booked.")
        if c.kind == ClawbackKind.REFUND:
            out = refunds.get(f"refund:{c.refund_id}") if c.refund_id else None
        else:
            out = booked.get(f"clawback:{c.pk}")
        if out != c.amount:
            problems.append(f"{name}: {c.amount} taken back, but {out} went out of escrow for it.")
        if c.order.status not in SETTLED:
            problems.append(f"{name}: the order is {c.order.status}, not settled.")
    for (order_pk, code), amount in taken.items():
        if amount > released.get((order_pk, code), 0):
            problems.append(
                f"Order {order_pk}: {amount} of its {code} taken back, more than the "
                f"{released.get((order_pk, code), 0)} released."
            )
    return problems
