"""Coupons: merchants make and switch them off; checkout finds one and counts a use atomically."""

from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import audit_record
from shop.models import Coupon, CouponKind, Merchant, Product
from shop.services.errors import ShopError

COUPON_CODE_MAX_LENGTH = 32


def coupon_code_normalise(code: str) -> str:
    return "".join(code.split()).upper()


@transaction.atomic(durable=True)
def coupon_create(
    *,
    merchant: Merchant,
    code: str,
    kind: str,
    value: int,
    currency: str = "",
    product: Product | None = None,
    expires_at: datetime | None = None,
    max_uses: int | None = None,
    actor: User | None,
    now: datetime,
) -> Coupon:
    """A new coupon of `merchant`'s. Refuses (nothing created): an empty or over-long code, one the
    merchant already has (`coupon_exists`), a percentage outside 1-99, a fixed amount of 0 or without a
    currency, a product of another merchant, a use limit of 0, an expiry in the past."""
    code = coupon_code_normalise(code)
    if not code or len(code) > COUPON_CODE_MAX_LENGTH or not code.isalnum():
        raise ShopError(_("A coupon code is 1 to 32 letters or digits."), "bad_coupon_code")
    if kind == CouponKind.PERCENT:
        if not 1 <= value <= 99:
            raise ShopError(_("A percentage is from 1 to 99."), "bad_coupon_value")
        currency = ""
    elif kind == CouponKind.FIXED:
        if value < 1 or not currency:
            raise ShopError(_("A fixed discount needs an amount and its currency."), "bad_coupon_value")
    else:
        raise ShopError(_("Choose a percentage or a fixed amount."), "bad_coupon_kind")
    if product is not None and product.merchant_id != merchant.pk:
        raise ShopError(_("This product is not yours."), "not_found")
    if max_uses is not None and max_uses < 1:
        raise ShopError(_("A use limit is at least 1 (leave it empty for no limit)."), "bad_coupon_limit")
    if expires_at is not None and expires_at <= now:
        raise ShopError(_("The expiry is in the past."), "bad_coupon_expiry")
    if Coupon.objects.filter(merchant=merchant, code=code).exists():
        raise ShopError(_("You already have a coupon with this code."), "coupon_exists")
    coupon = Coupon.objects.create(
        merchant=merchant,
        product=product,
        code=code,
        kind=kind,
        value=value,
        currency=currency,
        expires_at=expires_at,
        max_uses=max_uses,
        created_at=now,
    )
    audit_record(
        action=AuditAction.COUPON_CREATED,
        subject=coupon,
        now=now,
        actor=actor,
        data={"code": code, "kind": kind, "value": value, "max_uses": max_uses},
    )
    return coupon


@transaction.atomic(durable=True)
def coupon_deactivate(*, coupon: Coupon, actor: User | None, now: datetime) -> Coupon:
    """Switch a coupon off: checkouts refuse it from now on; orders that took it keep their discount."""
    Coupon.objects.filter(pk=coupon.pk).update(is_active=False)
    audit_record(action=AuditAction.COUPON_DEACTIVATED, subject=coupon, now=now, actor=actor, data={})
    coupon.refresh_from_db(fields=["is_active"])
    return coupon


def _coupon_refused(code: str) -> ShopError:
    messages = {
        "coupon_unknown": _("This coupon code is not valid for this product."),
        "coupon_expired": _("This coupon has expired."),
        "coupon_used_up": _("This coupon has been used up."),
    }
    return ShopError(messages[code], code)


def coupon_for_checkout(*, product: Product, code: str, now: datetime) -> Coupon:
    """The merchant's active coupon `code` valid for `product` now, or `ShopError`: `coupon_unknown`
    (no such code, switched off, another product's or merchant's, another currency's fixed amount),
    `coupon_expired` or `coupon_used_up`. Only a check: `coupon_redeem` counts the use."""
    coupon = (
        Coupon.objects.filter(merchant_id=product.merchant_id, code=coupon_code_normalise(code), is_active=True)
        .filter(Q(product__isnull=True) | Q(product=product))
        .first()
    )
    if coupon is None or (coupon.kind == CouponKind.FIXED and coupon.currency != product.currency):
        raise _coupon_refused("coupon_unknown")
    if coupon.expires_at is not None and coupon.expires_at <= now:
        raise _coupon_refused("coupon_expired")
    if coupon.max_uses is not None and coupon.uses >= coupon.max_uses:
        raise _coupon_refused("coupon_used_up")
    return coupon


def coupon_redeem(*, coupon: Coupon, now: datetime) -> None:
    """Count one use, inside the checkout's transaction (rolled back with it). One conditional UPDATE:
    under concurrent checkouts PostgreSQL re-checks `uses < max_uses` on the row the winner left, so a
    coupon is taken exactly up to its limit; the loser gets `coupon_used_up` (or `coupon_expired`)."""
    assert transaction.get_connection().in_atomic_block, "coupon_redeem runs inside the checkout's transaction"
    redeemed = (
        Coupon.objects.filter(pk=coupon.pk, is_active=True)
        .filter(Q(max_uses__isnull=True) | Q(uses__lt=F("max_uses")))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .update(uses=F("uses") + 1)
    )
    if redeemed != 1:
        coupon.refresh_from_db(fields=["expires_at"])
        expired = coupon.expires_at is not None and coupon.expires_at <= now
        raise _coupon_refused("coupon_expired" if expired else "coupon_used_up")
