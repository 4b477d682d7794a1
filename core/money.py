"""Money at the edges: amounts are integers of minor units; these turn them into text and back."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.db import models
from django.utils.translation import gettext_lazy as _


class Currency(models.TextChoices):
    CNY = "CNY", _("Chinese yuan")
    USD = "USD", _("US dollar")


MINOR_UNITS = {Currency.CNY: 2, Currency.USD: 2}
SYMBOLS = {Currency.CNY: "¥", Currency.USD: "$"}


class MoneyError(ValueError):
    pass


def to_major(amount: int, currency: str) -> str:
    """`1234, "CNY"` → `"12.34"` (the API's decimal string)."""
    places = MINOR_UNITS[currency]
    return str((Decimal(amount) / (10**places)).quantize(Decimal(1).scaleb(-places)))


def from_major(text: str, currency: str) -> int:
    """`"12.34", "CNY"` → `1234`; more decimals than the currency has is an error, not a rounding."""
    places = MINOR_UNITS.get(currency)
    if places is None:
        raise MoneyError(f"Unknown currency {currency!r}.")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as error:
        raise MoneyError(f"{text!r} is not an amount.") from error
    if not value.is_finite():
        raise MoneyError(f"{text!r} is not an amount.")
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise MoneyError(f"{text!r} has more than {places} decimal places.")
    return int(minor)


def display(amount: int, currency: str) -> str:
    """`123456, "CNY"` → `¥1,234.56 CNY`; `-500` → `-¥5.00 CNY` (the sign before the symbol)."""
    sign = "-" if amount < 0 else ""
    whole, _point, cents = to_major(abs(amount), currency).partition(".")
    grouped = f"{int(whole):,}" + (f".{cents}" if cents else "")
    return f"{sign}{SYMBOLS.get(currency, '')}{grouped} {currency}"


def money_column(field: str, *, currency_field: str = "currency", label: str = ""):
    """An admin column (or read-only field) showing `field` as `¥100.00 CNY`, never as minor units."""

    def column(obj) -> str:
        amount = getattr(obj, field)
        return "—" if amount is None else display(amount, getattr(obj, currency_field))

    column.short_description = label or field.replace("_", " ")
    column.admin_order_field = field
    column.__name__ = f"{field}_money"
    return column


def percent_of(amount: int, percent: Decimal) -> int:
    """`percent` of `amount`, rounded half up to a whole minor unit (the shop's one rounding rule)."""
    return int((Decimal(amount) * percent / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
