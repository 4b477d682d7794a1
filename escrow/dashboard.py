"""The merchant dashboard's numbers: per-day series of sales, revenue (gross, fees, net) and disputes
over 7 / 30 / 90 days, computed in a few grouped queries, and the SVG charts drawn from them on the
server (no script, no charting library: the page is complete as served, CSP-clean and fast on a phone).
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from escrow.models import Order, OrderStatus, Transfer, TransferKind

PERIODS = (7, 30, 90)
# An order counts as a sale once paid, whatever happened next (a refund shows up as lower net revenue).
SOLD = [
    OrderStatus.PAID,
    OrderStatus.DELIVERED,
    OrderStatus.COMPLETED,
    OrderStatus.DISPUTED,
    OrderStatus.REFUNDED,
    OrderStatus.PARTIALLY_REFUNDED,
]
# What the merchant does not see as open any more (disputes' own status names, read by string: escrow
# never imports disputes).
DISPUTE_CLOSED = "resolved"


@dataclass(frozen=True)
class Series:
    days: list[date]
    sales: list[int]
    gross: list[int]  # minor units, per currency chosen
    fees: list[int]
    net: list[int]
    disputes: list[int]

    @property
    def totals(self) -> dict[str, int]:
        return {name: sum(getattr(self, name)) for name in ("sales", "gross", "fees", "net", "disputes")}


def merchant_series(*, merchant, days: int, currency: str, now: datetime | None = None) -> Series:
    """Per day (in the current time zone) for the last `days` days, today included: paid orders, what
    buyers paid (gross), the platform's fee, the merchant's share (net = gross - fee) and disputes opened.
    Three queries, whatever the period."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    first = today - timedelta(days=days - 1)
    axis = [first + timedelta(days=n) for n in range(days)]
    index = {day: n for n, day in enumerate(axis)}
    zero = [0] * days
    sales, gross, fees, disputes = list(zero), list(zero), list(zero), list(zero)

    paid = (
        Order.objects.filter(merchant=merchant, currency=currency, status__in=SOLD, paid_at__date__gte=first)
        .annotate(day=TruncDate("paid_at"))
        .values("day")
        .annotate(count=Count("pk"), amount=Sum("amount"))
    )
    for row in paid:
        if row["day"] in index:
            sales[index[row["day"]]] = row["count"]
            gross[index[row["day"]]] = row["amount"] or 0
    # The fee as it was held when the order was paid (order:<pk>:fee), by the day of the payment.
    held_fees = (
        Transfer.objects.filter(
            order__merchant=merchant,
            currency=currency,
            code="fee",
            kind=TransferKind.PENDING,
            order__paid_at__date__gte=first,
        )
        .annotate(day=TruncDate("order__paid_at"))
        .values("day")
        .annotate(amount=Sum("amount"))
    )
    for row in held_fees:
        if row["day"] in index:
            fees[index[row["day"]]] = row["amount"] or 0
    opened = (
        Order.objects.filter(merchant=merchant, currency=currency, dispute__created_at__date__gte=first)
        .annotate(day=TruncDate("dispute__created_at"))
        .values("day")
        .annotate(count=Count("pk"))
    )
    for row in opened:
        if row["day"] in index:
            disputes[index[row["day"]]] = row["count"]
    net = [g - f for g, f in zip(gross, fees, strict=True)]
    return Series(days=axis, sales=sales, gross=gross, fees=fees, net=net, disputes=disputes)


def open_disputes(*, merchant) -> list[dict]:
    """The merchant's disputes still open, soonest deadline first: order, status and deadline."""
    return list(
        Order.objects.filter(merchant=merchant, dispute__isnull=False)
        .exclude(dispute__status=DISPUTE_CLOSED)
        .order_by("dispute__deadline")
        .values("pk", "product__title", "dispute__pk", "dispute__status", "dispute__deadline")[:20]
    )


def currencies_of(*, merchant) -> list[str]:
    # order_by() first: the model's default ordering (-pk) would otherwise make every order "distinct".
    found = list(Order.objects.filter(merchant=merchant).order_by().values_list("currency", flat=True).distinct())
    return sorted(found) or ["CNY"]


# --- the SVG ---------------------------------------------------------------------------------------

WIDTH, HEIGHT = 640, 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 12, 28


@dataclass(frozen=True)
class Line:
    name: str  # the legend's words
    values: list[int]
    css: str  # which colour class (the stylesheet holds the colours)


def chart_svg_data(*, lines: list[Line], days: list[date], label_of) -> dict:
    """The geometry of a line chart: each line's `points` attribute, axis ticks and labels.

    `label_of(value)` formats a y-axis value (a count or money). The template draws it; this keeps
    arithmetic out of templates and lets a test read the points.
    """
    top = max([max(line.values, default=0) for line in lines] + [0])
    top = top if top > 0 else 1
    span_x = WIDTH - PAD_LEFT - PAD_RIGHT
    span_y = HEIGHT - PAD_TOP - PAD_BOTTOM
    step = span_x / max(len(days) - 1, 1)

    def xy(n: int, value: int) -> tuple[float, float]:
        return round(PAD_LEFT + n * step, 1), round(PAD_TOP + span_y - value / top * span_y, 1)

    drawn = []
    for line in lines:
        points = [xy(n, value) for n, value in enumerate(line.values)]
        drawn.append(
            {
                "name": line.name,
                "css": line.css,
                "points": " ".join(f"{x},{y}" for x, y in points),
                "dots": [
                    {"x": x, "y": y, "value": label_of(v), "day": days[n]}
                    for n, ((x, y), v) in enumerate(zip(points, line.values, strict=True))
                    if v
                ],
                "total": label_of(sum(line.values)),
            }
        )
    grid = []
    for fraction in (0, 0.5, 1):
        y = round(PAD_TOP + span_y - fraction * span_y, 1)
        grid.append({"y": y, "label": label_of(round(top * fraction)), "label_y": y + 4})
    every = max(len(days) // 6, 1)
    ticks = [
        {"x": round(PAD_LEFT + n * step, 1), "label": day}
        for n, day in enumerate(days)
        if n % every == 0 or n == len(days) - 1
    ]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "lines": drawn,
        "grid": grid,
        "ticks": ticks,
        "left": PAD_LEFT,
        "right": WIDTH - PAD_RIGHT,
        "axis_y": HEIGHT - PAD_BOTTOM,
        "tick_y": HEIGHT - 8,
    }
