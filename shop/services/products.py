"""Products: listing and editing (a title is one line; a description is bounded and rendered to HTML
once, here), pausing and resuming, and the one e-mail when stock runs low.
"""

from datetime import datetime

from django.db import transaction
from django.utils.translation import gettext as _

import risk
from accounts.models import AuditAction, User
from accounts.services import audit_record
from shop.markdown import render_markdown
from shop.models import (
    DESCRIPTION_MAX_LENGTH,
    PRODUCT_TRANSITIONS,
    CardKey,
    CardKeyStatus,
    Category,
    Merchant,
    Product,
    ProductReviewReason,
    ProductStatus,
    WebhookEventType,
)
from shop.services.errors import ShopError
from shop.services.webhooks import webhook_emit


def product_title_check(title: str) -> str:
    """A title is one line: it goes into e-mail subjects and page headings as it is."""
    if "".join(title.splitlines()) != title:
        raise ShopError(_("A product title must be one line: remove the line breaks."), "bad_title")
    return title


PRICE_TIERS_MAX = 5


def price_tiers_check(tiers: object, *, price: int) -> list[list[int]]:
    """Wholesale tiers as stored: `[[min_quantity, unit_price], …]`, at most five, minimums from 2 and
    rising, each price in minor units below the one before (the product's price first). Anything else
    is `ShopError` `bad_price_tiers`, with nothing saved."""
    refused = ShopError(
        _(
            "Wholesale prices: at most %(most)d rows, quantities from 2 upwards, each row's price lower "
            "than the price before it."
        )
        % {"most": PRICE_TIERS_MAX},
        "bad_price_tiers",
    )
    if not isinstance(tiers, list | tuple) or len(tiers) > PRICE_TIERS_MAX:
        raise refused
    checked: list[list[int]] = []
    last_quantity, last_price = 1, price
    for tier in tiers:
        if not isinstance(tier, list | tuple) or len(tier) != 2:
            raise refused
        quantity, unit_price = tier
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (quantity, unit_price)):
            raise refused
        if quantity <= last_quantity or not 0 < unit_price < last_price:
            raise refused
        checked.append([quantity, unit_price])
        last_quantity, last_price = quantity, unit_price
    return checked


def product_review_reason(*, merchant: Merchant, category: Category | None) -> str:
    """Why a new product of this merchant in this category must wait for staff review ("" if it need
    not): a category staff marked sensitive, or a merchant whose dispute rate made risk raise their
    rolling reserve (the same fact `escrow.releases.reserve_percent_for` reads)."""
    if category is not None and category.is_sensitive:
        return ProductReviewReason.SENSITIVE_CATEGORY
    if risk.merchant_reserve_percent(merchant.pk) is not None:
        return ProductReviewReason.MERCHANT_RESERVE_RAISED
    return ""


# Not durable: the admin's change form calls it inside the transaction Django opens for the form.
@transaction.atomic
def product_create(
    *, merchant: Merchant, title: str, price: int, currency: str, now: datetime, **fields: object
) -> Product:
    """List a product; its description (at most DESCRIPTION_MAX_LENGTH characters, else `ShopError`
    `description_too_long` and nothing is created) is rendered to HTML here, once.

    A product in a sensitive category, or of a merchant whose reserve risk raised, starts
    `awaiting_review`: not listed, not purchasable, until staff approve it (`product_approve`)."""
    product_title_check(title)
    fields.pop("status", None)  # a product's state is this service's to set
    fields["description_html"] = _description_html(str(fields.get("description") or ""))
    fields["price_tiers"] = price_tiers_check(fields.get("price_tiers") or [], price=price)
    category = fields.get("category")
    reason = product_review_reason(merchant=merchant, category=category if isinstance(category, Category) else None)
    if reason:
        # Born awaiting review (a creation, not a move: no transition applies).
        fields["status"] = ProductStatus.AWAITING_REVIEW
        fields["review_reason"], fields["review_requested_at"] = reason, now
    product = Product.objects.create(
        merchant=merchant, title=title, price=price, currency=currency, created_at=now, **fields
    )
    if reason:
        audit_record(action=AuditAction.PRODUCT_REVIEW_REQUESTED, subject=product, now=now, data={"reason": reason})
    return product


def _description_html(description: str) -> str:
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise ShopError(
            _("The description is longer than %(limit)s characters.") % {"limit": f"{DESCRIPTION_MAX_LENGTH:,}"},
            "description_too_long",
        )
    return render_markdown(description)


PRODUCT_FIELDS = {
    "title",
    "description",
    "price",
    "currency",
    "category",
    "price_tiers",
    "inspection_hours",
    "max_per_order",
    "low_stock_threshold",
}


# Not durable: the admin's change form calls it inside the transaction Django opens for the form.
@transaction.atomic
def product_update(*, product: Product, actor: User | None, now: datetime, **fields: object) -> Product:
    """Change a product's listing (not its status or stock). A new description is bounded and rendered
    to HTML here, as in `product_create`; a refused one changes nothing. The audit row holds each
    field's old and new value, read under the product's row lock."""
    unknown = set(fields) - PRODUCT_FIELDS
    if unknown:
        raise ShopError(f"Not editable: {', '.join(sorted(unknown))}.")
    if "title" in fields:
        product_title_check(str(fields["title"]))
    old = Product.objects.select_for_update().values(*fields).get(pk=product.pk) if fields else {}
    updates = dict(fields)
    if "description" in fields:
        updates["description_html"] = _description_html(str(fields["description"] or ""))
    if "price_tiers" in fields or "price" in fields:
        # Tiers must stay below the price: checked against the row as it is (the caller's copy may be a stub).
        current = Product.objects.values("price", "price_tiers").get(pk=product.pk)
        price = fields.get("price", current["price"])
        tiers = fields.get("price_tiers", current["price_tiers"]) or []
        updates["price_tiers"] = price_tiers_check(tiers, price=price)  # type: ignore[arg-type]
    Product.objects.filter(pk=product.pk).update(**updates)
    moved_in = fields.get("category")
    if (
        isinstance(moved_in, Category)
        and moved_in.is_sensitive
        and old.get("category") != moved_in.pk
        and PRODUCT_TRANSITIONS.update(
            queryset=Product.objects.filter(pk=product.pk),
            to=ProductStatus.AWAITING_REVIEW,
            from_=[ProductStatus.ACTIVE, ProductStatus.PAUSED],
            review_reason=ProductReviewReason.SENSITIVE_CATEGORY,
            review_requested_at=now,
            reviewed_at=None,
            review_note="",
        )
    ):
        # Moved into a sensitive category: off sale until staff look, as a new product there would be.
        audit_record(
            action=AuditAction.PRODUCT_REVIEW_REQUESTED,
            subject=product,
            now=now,
            actor=actor,
            data={"reason": ProductReviewReason.SENSITIVE_CATEGORY},
        )
    audit_record(
        action=AuditAction.PRODUCT_UPDATED,
        subject=product,
        now=now,
        actor=actor,
        # A category is a row: the audit (JSON) keeps its pk, as `values()` gives for the old one.
        data={"fields": sorted(fields), "old": old, "new": {k: getattr(v, "pk", v) for k, v in fields.items()}},
    )
    product.refresh_from_db()
    product_low_stock_check(product_pk=product.pk, now=now)
    return product


@transaction.atomic(durable=True)
def product_pause(*, product: Product, actor: User | None, now: datetime) -> Product:
    """Take a product off sale; its stock stays."""
    return _product_status_set(product=product, status=ProductStatus.PAUSED, actor=actor, now=now)


@transaction.atomic(durable=True)
def product_resume(*, product: Product, actor: User | None, now: datetime) -> Product:
    """Put a paused product back on sale (only a paused one: resuming never skips a review)."""
    return _product_status_set(product=product, status=ProductStatus.ACTIVE, actor=actor, now=now)


# Pause and resume move only between these two: a product awaiting review (or rejected) is staff's.
_PAUSE_RESUME_FROM = {ProductStatus.ACTIVE: [ProductStatus.PAUSED], ProductStatus.PAUSED: [ProductStatus.ACTIVE]}


def _product_status_set(*, product: Product, status: str, actor: User | None, now: datetime) -> Product:
    PRODUCT_TRANSITIONS.apply(model=Product, pk=product.pk, to=status, from_=_PAUSE_RESUME_FROM[status])
    action = AuditAction.PRODUCT_PAUSED if status == ProductStatus.PAUSED else AuditAction.PRODUCT_RESUMED
    audit_record(action=action, subject=product, now=now, actor=actor)
    product.refresh_from_db(fields=["status"])
    return product


@transaction.atomic(durable=True)
def product_edit(
    *, product: Product, actor: User | None, now: datetime, status: str | None = None, **fields
) -> Product:
    """The API's one edit: listing fields (as `product_update`) and, with `status`, pause or resume, in
    one transaction, so a refused part changes nothing. Asking for the status it already has is no
    change (not an error); an unknown status is `ShopError` "bad_status"."""
    if status is not None and status not in _PAUSE_RESUME_FROM:
        raise ShopError(_("A product is either active or paused."), "bad_status")
    if fields:
        product = product_update(product=product, actor=actor, now=now, **fields)
    if status is not None and Product.objects.filter(pk=product.pk).values_list("status", flat=True).get() != status:
        product = _product_status_set(product=product, status=status, actor=actor, now=now)
    return product


@transaction.atomic(durable=True)
def product_approve(*, product: Product, actor: User, now: datetime) -> Product:
    """Staff approve a product awaiting review: it is listed and purchasable from now on. A second
    approval (or one racing a rejection) fails with `StateError`."""
    PRODUCT_TRANSITIONS.apply(
        model=Product,
        pk=product.pk,
        to=ProductStatus.ACTIVE,
        from_=[ProductStatus.AWAITING_REVIEW],
        reviewed_at=now,
        review_note="",
    )
    audit_record(action=AuditAction.PRODUCT_APPROVED, subject=product, now=now, actor=actor)
    product.refresh_from_db(fields=["status", "reviewed_at", "review_note"])
    return product


@transaction.atomic(durable=True)
def product_reject(*, product: Product, reason: str, actor: User, now: datetime) -> Product:
    """Staff reject a product awaiting review, with a reason the merchant reads; it stays off sale (the
    merchant may edit it and ask again, `product_review_request`)."""
    reason = reason.strip()
    if not reason:
        raise ShopError(_("Give the merchant a reason."), "reason_required")
    PRODUCT_TRANSITIONS.apply(
        model=Product,
        pk=product.pk,
        to=ProductStatus.REJECTED,
        from_=[ProductStatus.AWAITING_REVIEW],
        reviewed_at=now,
        review_note=reason,
    )
    audit_record(action=AuditAction.PRODUCT_REJECTED, subject=product, now=now, actor=actor, data={"reason": reason})
    product.refresh_from_db(fields=["status", "reviewed_at", "review_note"])
    return product


@transaction.atomic(durable=True)
def product_review_request(*, product: Product, actor: User | None, now: datetime) -> Product:
    """The merchant of a rejected product (edited since, presumably) asks staff to look again."""
    PRODUCT_TRANSITIONS.apply(
        model=Product,
        pk=product.pk,
        to=ProductStatus.AWAITING_REVIEW,
        from_=[ProductStatus.REJECTED],
        review_requested_at=now,
    )
    audit_record(
        action=AuditAction.PRODUCT_REVIEW_REQUESTED,
        subject=product,
        now=now,
        actor=actor,
        data={"reason": product.review_reason, "again": True},
    )
    product.refresh_from_db(fields=["status", "review_requested_at"])
    return product


# No savepoint of its own: inside a caller's transaction (a delivery) an error here fails the caller anyway.
@transaction.atomic(savepoint=False)
def product_low_stock_check(
    *, product_pk: int, now: datetime, product: Product | None = None, available: int | None = None
) -> bool:
    """Send the merchant one e-mail when available stock falls below the product's threshold.

    `low_stock_notified_at` is set by compare-and-set when the e-mail is queued (so racing sales send one)
    and cleared once stock is back at or above the threshold, arming the next e-mail. Call it after
    anything that lowers or raises available stock; it is cheap (a count capped at the threshold). Returns whether an
    e-mail was queued.
    """
    if product is None or product.pk != product_pk:  # a caller holding the row saves a read
        product = Product.objects.get(pk=product_pk)
    # Counting stops at the threshold: "below it or not" needs no more rows, and below it the count is exact.
    # A caller that counted the same way in a statement of its own (escrow's delivery) passes `available`.
    if available is None:
        available = CardKey.objects.filter(product_id=product_pk, status=CardKeyStatus.AVAILABLE)[
            : product.low_stock_threshold
        ].count()
    if available >= product.low_stock_threshold:
        if product.low_stock_notified_at is not None:
            Product.objects.filter(pk=product_pk).update(low_stock_notified_at=None)
        return False
    if product.low_stock_notified_at is not None:  # already told; the compare-and-set below settles races
        return False
    armed = Product.objects.filter(pk=product_pk, low_stock_notified_at__isnull=True).update(low_stock_notified_at=now)
    if armed != 1:
        return False
    audit_record(action=AuditAction.PRODUCT_LOW_STOCK, subject=product, now=now, data={"available": available})
    webhook_emit(
        merchant_pk=product.merchant_id,
        event_type=WebhookEventType.STOCK_LOW,
        data={
            "product": {
                "id": product.pk,
                "title": product.title,
                "available": available,
                "threshold": product.low_stock_threshold,
            }
        },
        now=now,
    )
    from shop.tasks import product_low_stock_email_task

    # robust: it runs after a delivery commits; a broker hiccup must not turn that into a failed task.
    transaction.on_commit(
        lambda: product_low_stock_email_task.delay(product_pk=product_pk, available=available), robust=True
    )
    return True
