"""What an order costs: the wholesale tier for its quantity, then the coupon. Pure arithmetic in minor
units, no database: checkout (escrow.services.order_place) runs it on the server, the product page
shows the same tiers, and a total typed or tampered with in a form is never read.
"""

from dataclasses import dataclass
from decimal import Decimal

from core.money import percent_of
from shop.models import Coupon, CouponKind, Product


@dataclass(frozen=True)
class Price:
    unit_price: int  # the tier's price for this quantity
    subtotal: int  # unit_price x quantity
    discount: int  # the coupon's part (0 without one)
    total: int  # what the buyer pays: subtotal - discount, never below one minor unit


def unit_price_for(product: Product, quantity: int) -> int:
    """The unit price at `quantity`: the last tier whose minimum it reaches, else the product's price.
    Tiers are kept ascending by minimum (services.price_tiers_check)."""
    price = product.price
    for min_quantity, tier_price in product.price_tiers or ():
        if quantity >= min_quantity:
            price = tier_price
    return price


def coupon_discount(coupon: Coupon, *, subtotal: int, currency: str) -> int:
    """The coupon's discount on `subtotal`: a percentage rounded half up (the shop's one rounding
    rule), or the fixed amount; at most `subtotal - 1`, so an order always costs something."""
    if coupon.kind == CouponKind.PERCENT:
        discount = percent_of(subtotal, Decimal(coupon.value))
    else:
        discount = coupon.value if coupon.currency == currency else 0
    return max(0, min(discount, subtotal - 1))


def price_for(product: Product, *, quantity: int, coupon: Coupon | None = None) -> Price:
    unit_price = unit_price_for(product, quantity)
    subtotal = unit_price * quantity
    discount = coupon_discount(coupon, subtotal=subtotal, currency=product.currency) if coupon else 0
    return Price(unit_price=unit_price, subtotal=subtotal, discount=discount, total=subtotal - discount)


def tiers_display(product: Product) -> list[dict]:
    """The tiers as rows for the product page: from-to quantity and the unit price (the base price first)."""
    bounds = [(1, product.price), *[(int(m), int(p)) for m, p in product.price_tiers or ()]]
    rows = []
    for index, (min_quantity, price) in enumerate(bounds):
        upper = bounds[index + 1][0] - 1 if index + 1 < len(bounds) else None
        rows.append({"min": min_quantity, "max": upper, "price": price})
    return rows
