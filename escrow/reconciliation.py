"""Daily reconciliation: the ledger's gateway_clearing against each gateway's own books.

Every payment and refund the gateway settled must appear once in the ledger with the same amount,
and the other way round; and the clearing balance up to the end of the day must equal the gateway's
net (payments less refunds). Each difference raises one staff alert (rerunning raises nothing new).
"""

import logging
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta

from django.db.models import Q, Sum

from accounts.services import alert_raise
from escrow.gateways import gateway_get, gateways_enabled
from escrow.models import AccountKind, Payment, Refund, Transfer, TransferKind

logger = logging.getLogger(__name__)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _ledger_items(*, gateway_name: str, since: datetime, until: datetime) -> dict[tuple[str, str], tuple[int, str]]:
    """(kind, gateway reference) → (amount, currency) as the ledger booked them in the window."""
    items: dict[tuple[str, str], tuple[int, str]] = {}
    window = Q(created_at__gte=since, created_at__lt=until)
    payments = Transfer.objects.filter(
        window, code__in=["payment", "payment_mismatch"], debit_account__kind=AccountKind.GATEWAY_CLEARING
    )
    payment_pks = {int(t.transfer_id.split(":")[1]): t for t in payments}
    for pk, payment_id in Payment.objects.filter(pk__in=payment_pks, gateway=gateway_name).values_list(
        "pk", "payment_id"
    ):
        items[("payment", payment_id)] = (payment_pks[pk].amount, payment_pks[pk].currency)
    paid = Transfer.objects.filter(window, code="refund_paid", credit_account__kind=AccountKind.GATEWAY_CLEARING)
    refund_pks = {int(t.transfer_id.split(":")[1]): t for t in paid}
    for pk, reference in Refund.objects.filter(pk__in=refund_pks, gateway=gateway_name).values_list(
        "pk", "gateway_refund_id"
    ):
        items[("refund", reference)] = (refund_pks[pk].amount, refund_pks[pk].currency)
    return items


def reconcile(*, since: datetime, until: datetime, now: datetime) -> list[str]:
    """Compare `[since, until)` for every gateway; returns the differences found (each alerted once)."""
    differences: list[tuple[str, str]] = []
    gateway_net: dict[str, int] = defaultdict(int)
    day = since.date().isoformat()
    for name in sorted(gateways_enabled()):
        gateway = gateway_get(name)
        theirs = {(r.kind, r.reference): (r.amount, r.currency) for r in gateway.records(since=since, until=until)}
        ours = _ledger_items(gateway_name=name, since=since, until=until)
        for key in sorted(set(theirs) | set(ours)):
            kind, reference = key
            if key not in ours:
                message = f"{name}: {kind} {reference} {theirs[key]} is in the gateway's books but not in the ledger."
            elif key not in theirs:
                message = f"{name}: {kind} {reference} {ours[key]} is in the ledger but not in the gateway's books."
            elif theirs[key] != ours[key]:
                message = f"{name}: {kind} {reference} is {theirs[key]} at the gateway but {ours[key]} in the ledger."
            else:
                continue
            differences.append((f"reconcile:{name}:{day}:{kind}:{reference}", message))
        for record in gateway.records(since=EPOCH, until=until):
            gateway_net[record.currency] += record.amount if record.kind == "payment" else -record.amount

    booked = Transfer.objects.filter(created_at__lt=until).exclude(kind=TransferKind.PENDING)
    ledger_net: dict[str, int] = defaultdict(int)
    for row in (
        booked.filter(debit_account__kind=AccountKind.GATEWAY_CLEARING).values("currency").annotate(total=Sum("amount"))
    ):
        ledger_net[row["currency"]] += row["total"]
    for row in (
        booked.filter(credit_account__kind=AccountKind.GATEWAY_CLEARING)
        .values("currency")
        .annotate(total=Sum("amount"))
    ):
        ledger_net[row["currency"]] -= row["total"]
    for currency in sorted(set(gateway_net) | set(ledger_net)):
        if gateway_net[currency] != ledger_net[currency]:
            differences.append(
                (
                    f"reconcile:{day}:balance:{currency}",
                    f"{currency}: gateway clearing is {ledger_net[currency]} in the ledger but the gateways' books "
                    f"net {gateway_net[currency]} at {until.isoformat()}.",
                )
            )

    for key, message in differences:
        alert_raise(key=key, kind="reconciliation", message=message, now=now, data={"day": day})
        logger.warning("escrow.reconciliation_difference", extra={"key": key})
    return [message for _, message in differences]


def reconcile_day(*, now: datetime) -> int:
    """Reconcile the previous whole UTC day."""
    until = datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)
    return len(reconcile(since=until - timedelta(days=1), until=until, now=now))
