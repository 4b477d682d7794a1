from datetime import datetime

from django.db import connection
from django.db.models import QuerySet, Sum
from django.http import Http404
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from core import prepared
from escrow import ledger
from escrow.links import order_link_token_opens
from escrow.models import Order, OrderStatus, token_hash


def order_for_viewer(*, pk: int, token: str | None, user: User | None, status_only: bool = False) -> Order:
    """The order, if this viewer owns it: by its access token (the checkout's, or a signed one from a
    later e-mail, see escrow/links.py), or as its signed-in buyer.

    Anything else raises Http404, so a guessed id and a wrong token look the same as a missing order.
    `status_only` reads just the order's status (the keys poll needs no more), without its product
    and merchant.
    """
    if status_only:
        read = order_status_read
    else:
        orders = Order.objects.select_related("product", "merchant")

        def read(*, pk: int, **where) -> Order | None:
            return orders.filter(pk=pk, **where).first()

    if not 0 < pk <= ORDER_PK_MAX:  # no such order, and no statement: the database's bigint would refuse it
        raise Http404
    order = None
    if token:
        order = read(pk=pk, access_token_hash=token_hash(token))
        if order is None and order_link_token_opens(token, pk):
            order = read(pk=pk)
    elif user is not None and user.is_authenticated:
        order = read(pk=pk, buyer_id=user.pk)
    if order is None:
        raise Http404
    return order


ORDER_PK_MAX = 2**63 - 1
# The keys poll's read, by what identifies the viewer: the buyer polls it every 100 ms until the keys
# are there, so its text is written once here (compiling the ORM's query cost more CPU than running
# it). Table and column names come from the model; every value is a parameter.
_STATUS_COLUMNS = ["id", "status"]
_STATUS_SQL = {
    where: f"SELECT {', '.join(_STATUS_COLUMNS)} FROM {Order._meta.db_table} WHERE "  # noqa: S608 - names, no input
    + " AND ".join(f"{Order._meta.get_field(name).column} = %s" for name in where)
    for where in [("id",), ("id", "access_token_hash"), ("id", "buyer_id")]
}


def order_status_read(*, pk: int, **where) -> Order | None:
    """The order `pk` with only its status loaded (any other field read on use), where `where` holds
    (an access token's hash, a buyer), or None."""
    with connection.cursor() as cursor:
        prepared.execute(cursor, _STATUS_SQL[("id", *where)], [pk, *where.values()])
        row = cursor.fetchone()
    return Order.from_db(connection.alias, _STATUS_COLUMNS, row) if row is not None else None


# What a buyer's daily spending limit counts: every order placed, paid or not yet paid, except the ones
# that ended without the buyer's money (expired, cancelled) or gave all of it back (refunded).
SPENDING_STATUSES_NOT_COUNTED = (OrderStatus.EXPIRED, OrderStatus.CANCELLED, OrderStatus.REFUNDED)


def buyer_spent_since(*, buyer: User, currency: str, since: datetime, excluding_order_pk: int | None = None) -> int:
    """What `buyer` has spent in `currency` on orders placed since `since` (minor units), leaving out
    the order `excluding_order_pk` (the checkout's own, written before its limit is checked)."""
    orders = Order.objects.filter(buyer=buyer, currency=currency, created_at__gte=since)
    if excluding_order_pk is not None:
        orders = orders.exclude(pk=excluding_order_pk)
    spent = orders.exclude(status__in=SPENDING_STATUSES_NOT_COUNTED).aggregate(total=Sum("amount"))["total"]
    return spent or 0


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
    return gateway_get(payment.gateway).pay_url(payment=payment, return_url=return_url)


def orders_of_buyer(user: User) -> QuerySet[Order]:
    return Order.objects.filter(buyer=user).select_related("product", "merchant").order_by("-pk")


# --- merchant money ---------------------------------------------------------------------------------

# The merchant's own accounts, as a merchant says them (the ledger's names are for staff).
ACCOUNT_WORDS = {
    "merchant_available": _("Available to withdraw"),
    "merchant_reserve": _("Reserve"),
}


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
        .select_related("debit_account", "credit_account", "pending")
        .order_by("-created_at", "-pk")
    )
    if since:
        transfers = transfers.filter(created_at__date__gte=since)
    if until:
        transfers = transfers.filter(created_at__date__lte=until)
    return transfers, set(accounts)


def statement_line(transfer, merchant_accounts: set[int], fees: dict[int, int] | None = None) -> dict:
    """How one transfer reads on the merchant's statement: which account of theirs, in or out, and a
    sentence saying what happened (`statement_fees` gives each order's fee for the sentence)."""
    incoming = transfer.credit_account_id in merchant_accounts
    own = transfer.credit_account if incoming else transfer.debit_account
    fee = (fees or {}).get(transfer.order_id)
    return {
        "at": transfer.created_at,
        "transfer_id": transfer.transfer_id,
        "kind": transfer.get_kind_display(),
        "code": transfer.code,
        "account": ACCOUNT_WORDS.get(own.kind, own.get_kind_display()),
        "direction": "in" if incoming else "out",
        "amount": transfer.amount if incoming else -transfer.amount,
        "currency": transfer.currency,
        "order": transfer.order_id,
        "fee": fee,
        "description": statement_words(transfer, fee=fee),
        # Held money has not reached the balance yet: the page shows it apart from what moved.
        "pending": transfer.kind == "pending",
    }


def statement_fees(transfers) -> dict[int, int]:
    """Order → the platform fee of that order (what was posted if the order is released, else what is
    held), for the orders among `transfers`: one query."""
    from escrow.models import Transfer, TransferKind

    order_pks = {t.order_id for t in transfers if t.order_id}
    fees: dict[int, int] = {}
    rows = Transfer.objects.filter(
        order_id__in=order_pks, code="fee", kind__in=[TransferKind.PENDING, TransferKind.POST_PENDING]
    ).values_list("order_id", "kind", "amount")
    for order_pk, _kind, amount in sorted(rows, key=lambda row: row[1] == TransferKind.POST_PENDING):
        fees[order_pk] = amount  # a posted fee (a release, possibly partial) overrides the held one
    return fees


def _number_in(transfer_id: str) -> str:
    parts = transfer_id.split(":")
    return parts[1] if len(parts) > 1 else ""


def statement_words(transfer, *, fee: int | None = None) -> str:
    """One sentence for one transfer, in the reader's language: "Order #3 released: ¥95.00 after ¥5.00 fee"."""
    from django.utils.translation import gettext as _

    from core.money import display
    from escrow.models import TransferKind

    amount = display(transfer.amount, transfer.currency)
    fee_text = display(fee, transfer.currency) if fee is not None else None
    order = transfer.order_id
    code, kind = transfer.code, transfer.kind
    if code == "share":
        if kind == TransferKind.PENDING:
            if fee_text:
                return _("Order #%(order)s paid: %(amount)s held in escrow for you (after a %(fee)s fee)") % {
                    "order": order,
                    "amount": amount,
                    "fee": fee_text,
                }
            return _("Order #%(order)s paid: %(amount)s held in escrow for you") % {"order": order, "amount": amount}
        if kind == TransferKind.POST_PENDING:
            partial = transfer.pending_id and transfer.pending and transfer.amount < transfer.pending.amount
            if partial:
                return _("Order #%(order)s partly released: %(amount)s (the rest went back to the buyer)") % {
                    "order": order,
                    "amount": amount,
                }
            if fee_text:
                return _("Order #%(order)s released: %(amount)s after %(fee)s fee") % {
                    "order": order,
                    "amount": amount,
                    "fee": fee_text,
                }
            return _("Order #%(order)s released: %(amount)s") % {"order": order, "amount": amount}
        if kind == TransferKind.VOID_PENDING:
            return _("Order #%(order)s refunded to the buyer: the %(amount)s held for you is cancelled") % {
                "order": order,
                "amount": amount,
            }
    if code == "reserve":
        return _("Order #%(order)s: %(amount)s set aside in your reserve") % {"order": order, "amount": amount}
    if code == "reserve_release":
        return _("Order #%(order)s: reserve of %(amount)s released to your available balance") % {
            "order": order,
            "amount": amount,
        }
    if code == "withdrawal":
        number = _number_in(transfer.transfer_id)
        if kind == TransferKind.PENDING:
            return _("Withdrawal #%(number)s requested: %(amount)s") % {"number": number, "amount": amount}
        if kind == TransferKind.POST_PENDING:
            return _("Withdrawal #%(number)s paid out: %(amount)s") % {"number": number, "amount": amount}
        if kind == TransferKind.VOID_PENDING:
            return _("Withdrawal #%(number)s rejected: %(amount)s back in your available balance") % {
                "number": number,
                "amount": amount,
            }
    if order:
        return _("Order #%(order)s: %(amount)s (%(what)s)") % {
            "order": order,
            "amount": amount,
            "what": transfer.get_kind_display(),
        }
    return _("%(amount)s (%(what)s)") % {"amount": amount, "what": transfer.get_kind_display()}


# --- the merchant's orders --------------------------------------------------------------------------


def merchant_orders(
    merchant,
    *,
    q: str = "",
    status: str | None = "",
    product: int | None = None,
    since=None,
    until=None,
    created_after=None,
):
    """The merchant's orders, newest first, filtered; `q` is an order number (with or without "#") or
    a buyer's e-mail (whole, any case); `since` / `until` are days (the pages), `created_after` a
    moment (the API). Only this merchant's orders, whatever the filters say."""
    orders = Order.objects.filter(merchant=merchant).select_related("product").order_by("-pk")
    q = q.strip()
    if q:
        number = q.lstrip("#")
        orders = orders.filter(pk=int(number)) if number.isdigit() else orders.filter(email__iexact=q)
    if status:
        orders = orders.filter(status=status)
    if product:
        orders = orders.filter(product_id=product)
    if since:
        orders = orders.filter(created_at__date__gte=since)
    if until:
        orders = orders.filter(created_at__date__lte=until)
    if created_after is not None:
        orders = orders.filter(created_at__gte=created_after)
    return orders


def merchant_order(merchant, pk: int) -> Order:
    """One of the merchant's orders with what its page shows; someone else's (or none) raises Http404."""
    order = (
        Order.objects.filter(pk=pk, merchant=merchant)
        .select_related("product", "buyer")
        .prefetch_related("payments", "refunds", "reveals")
        .first()
    )
    if order is None:
        raise Http404
    return order


def order_dispute(order: Order):
    """The order's dispute, if any, read through the reverse relation (escrow never imports disputes)."""
    from django.core.exceptions import ObjectDoesNotExist

    try:
        return order.dispute
    except ObjectDoesNotExist:
        return None
