"""The ledger's invariants (DESIGN.md), checked from the transfers themselves."""

from collections import defaultdict

from django.db.models import Q, Sum

from escrow.models import AccountKind, LedgerAccount, Order, OrderStatus, Transfer, TransferKind

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

    for account in LedgerAccount.objects.filter(kind=AccountKind.MERCHANT_AVAILABLE):
        available = account.credits_posted - account.debits_posted - account.debits_pending
        if available < 0:
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
        if escrow.credit_balance != open_holds[escrow.currency]:
            problems.append(
                f"Escrow {escrow.currency}: balance {escrow.credit_balance} != open holds {open_holds[escrow.currency]}."
            )

    problems.extend(_settled_order_problems())
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
        )
        .values_list("pk", "amount", "paid", "paid_out")
    )
    for pk, amount, paid, paid_out in sums.iterator(chunk_size=2000):
        if (paid or 0) != amount:
            problems.append(f"Order {pk}: settled, but the buyer's payment recorded is {paid}, not {amount}.")
        elif (paid_out or 0) != amount:
            problems.append(f"Order {pk}: merchant share + fee + refunds = {paid_out}, but the buyer paid {amount}.")
    open_on_settled = Transfer.objects.filter(
        order__status__in=SETTLED, kind=TransferKind.PENDING, resolutions__isnull=True
    ).values_list("transfer_id", flat=True)
    problems.extend(f"Transfer {tid} is still pending on a settled order." for tid in open_on_settled)
    return problems
