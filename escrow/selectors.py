from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from escrow import ledger
from escrow.links import order_link_token_opens
from escrow.models import Order, token_hash


def order_for_viewer(*, pk: int, token: str | None, user: User | None) -> Order:
    """The order, if this viewer owns it: by its access token (the checkout's, or a signed one from a
    later e-mail, see escrow/links.py), or as its signed-in buyer.

    Anything else raises Http404, so a guessed id and a wrong token look the same as a missing order.
    """
    orders = Order.objects.select_related("product", "merchant")
    if token:
        order = orders.filter(pk=pk, access_token_hash=token_hash(token)).first()
        if order is None and order_link_token_opens(token, pk):
            order = orders.filter(pk=pk).first()
    elif user is not None and user.is_authenticated:
        order = orders.filter(pk=pk, buyer=user).first()
    else:
        order = None
    if order is None:
        raise Http404
    return order


def order_timeline(order: Order) -> list[dict]:
    """The order's story for its buyer, oldest first: each step's `label`, `at` (None while it has not
    happened) and `state` ("done", "pending" or "problem"). Two small queries (refunds, the dispute's
    opening); the rest is on the order row."""
    from django.utils.translation import gettext as _

    from escrow.models import DisputeActionKind, OrderStatus

    status = order.status
    steps = [{"label": _("Placed"), "at": order.created_at, "state": "done"}]
    if order.paid_at is None and status in {OrderStatus.EXPIRED, OrderStatus.CANCELLED}:
        failed = status == OrderStatus.CANCELLED
        label = _("Payment failed") if failed else _("Not paid in time")
        return [*steps, {"label": label, "at": None if failed else order.expires_at, "state": "problem"}]
    steps.append({"label": _("Paid"), "at": order.paid_at, "state": "done" if order.paid_at else "pending"})
    if status == OrderStatus.HELD_FOR_REVIEW:
        steps.append({"label": _("Being checked by staff"), "at": None, "state": "problem"})
    steps.append(
        {"label": _("Delivered"), "at": order.delivered_at, "state": "done" if order.delivered_at else "pending"}
    )
    opened = order.dispute_actions.filter(kind=DisputeActionKind.OPEN).values_list("created_at", flat=True).first()
    if opened is not None:
        steps.append({"label": _("Disputed"), "at": opened, "state": "problem"})
    refunds = list(order.refunds.order_by("pk").values_list("created_at", flat=True))
    if status in {OrderStatus.REFUNDED, OrderStatus.PARTIALLY_REFUNDED} or refunds:
        label = _("Refunded") if status == OrderStatus.REFUNDED else _("Partly refunded")
        steps.append({"label": label, "at": refunds[-1] if refunds else order.completed_at, "state": "done"})
        return steps
    if status == OrderStatus.COMPLETED:
        confirmed = order.inspection_ends_at is not None and order.completed_at < order.inspection_ends_at
        accepted = _("You confirmed receipt") if confirmed or opened else _("Inspection window ended")
        if opened is None:
            steps.append({"label": accepted, "at": order.completed_at, "state": "done"})
        steps.append({"label": _("Released to the merchant"), "at": order.completed_at, "state": "done"})
    elif opened is None:
        steps.append({"label": _("Accepted"), "at": None, "state": "pending"})
        steps.append({"label": _("Released to the merchant"), "at": None, "state": "pending"})
    return steps


def order_pay_link(order: Order, *, return_url: str) -> str | None:
    """Where the buyer pays an unpaid order: its pending payment's page at the gateway (None if none)."""
    from escrow.gateways import gateway_get
    from escrow.models import PaymentStatus

    payment = order.payments.filter(status=PaymentStatus.PENDING).order_by("-pk").first()
    if payment is None:
        return None
    return gateway_get(payment.gateway).pay_url(payment_id=payment.payment_id, return_url=return_url)


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
