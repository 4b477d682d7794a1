from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from escrow import ledger
from escrow.models import Order, token_hash


def order_for_viewer(*, pk: int, token: str | None, user: User | None) -> Order:
    """The order, if this viewer owns it: by its access token, or as its signed-in buyer.

    Anything else raises Http404, so a guessed id and a wrong token look the same as a missing order.
    """
    orders = Order.objects.select_related("product", "merchant")
    if token:
        order = orders.filter(pk=pk, access_token_hash=token_hash(token)).first()
    elif user is not None and user.is_authenticated:
        order = orders.filter(pk=pk, buyer=user).first()
    else:
        order = None
    if order is None:
        raise Http404
    return order


def orders_of_buyer(user: User) -> QuerySet[Order]:
    return Order.objects.filter(buyer=user).select_related("product", "merchant").order_by("-pk")


# --- merchant money ---------------------------------------------------------------------------------


def merchant_balances(merchant) -> list[dict]:
    """Per currency: available, held in escrow for them, in reserve, and withdrawals waiting."""
    from escrow.models import AccountKind, LedgerAccount

    rows: dict[str, dict] = {}
    for account in LedgerAccount.objects.filter(merchant=merchant).order_by("currency", "kind"):
        row = rows.setdefault(
            account.currency,
            {"currency": account.currency, "available": 0, "escrow": 0, "reserve": 0, "withdrawing": 0},
        )
        if account.kind == AccountKind.MERCHANT_AVAILABLE:
            row["available"] = ledger.available_of(account)
            row["escrow"] = account.credits_pending
            row["withdrawing"] = account.debits_pending
        elif account.kind == AccountKind.MERCHANT_RESERVE:
            row["reserve"] = account.credit_balance
    return list(rows.values())


def merchant_statement(merchant, *, since=None, until=None):
    """Every transfer that touched the merchant's accounts, newest first, each with its signed amount."""
    from django.db.models import Q

    from escrow.models import LedgerAccount, Transfer

    accounts = list(LedgerAccount.objects.filter(merchant=merchant).values_list("pk", flat=True))
    transfers = (
        Transfer.objects.filter(Q(debit_account_id__in=accounts) | Q(credit_account_id__in=accounts))
        .select_related("debit_account", "credit_account")
        .order_by("-created_at", "-pk")
    )
    if since:
        transfers = transfers.filter(created_at__date__gte=since)
    if until:
        transfers = transfers.filter(created_at__date__lte=until)
    return transfers, set(accounts)


def statement_line(transfer, merchant_accounts: set[int]) -> dict:
    """How one transfer reads on the merchant's statement: which account of theirs, and in or out."""
    incoming = transfer.credit_account_id in merchant_accounts
    own = transfer.credit_account if incoming else transfer.debit_account
    return {
        "at": transfer.created_at,
        "transfer_id": transfer.transfer_id,
        "kind": transfer.get_kind_display(),
        "code": transfer.code,
        "account": own.get_kind_display(),
        "direction": "in" if incoming else "out",
        "amount": transfer.amount if incoming else -transfer.amount,
        "currency": transfer.currency,
        "order": transfer.order_id,
    }


# --- the merchant API ---------------------------------------------------------------------------------


def merchant_orders(*, merchant, status: str | None = None, since=None) -> QuerySet[Order]:
    """The merchant's orders, optionally in one status and created at or after `since`."""
    orders = Order.objects.filter(merchant=merchant).select_related("product")
    if status:
        orders = orders.filter(status=status)
    if since is not None:
        orders = orders.filter(created_at__gte=since)
    return orders.order_by("-pk")


def merchant_order(*, merchant, pk: int) -> Order:
    """One of the merchant's orders; anyone else's (or none) raises Http404."""
    order = Order.objects.filter(merchant=merchant, pk=pk).select_related("product").first()
    if order is None:
        raise Http404
    return order
