"""Every write of the escrow app: orders, payments, delivery, the money held and released."""

import dataclasses
import inspect
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.urls import reverse
from django.utils.translation import gettext as _

import risk
from accounts.models import AuditAction, User
from accounts.services import audit_record, audit_record_sql, spending_limit_refusal
from core import prepared
from core.errors import Refused
from core.metrics import DELIVERY_LATENCY_BUCKETS, metric_count, metric_observe
from core.money import percent_of
from core.ratelimit import RateAttempt, RateLimited, rate_limit_check  # noqa: F401  (RateLimited: for callers)
from core.sql import on_postgresql
from core.transitions import StateError
from escrow import clawbacks, ledger, refunds, reveals, webhook_events
from escrow.checkout_sql import checkout_identities, checkout_product_read, order_write
from escrow.delivery import order_delivered_announce, order_delivered_mark, order_delivery_enqueue

# Escrow's front door for disputes, re-exported with the rest of escrow's writes.
from escrow.disputes_front import (  # noqa: F401
    DisputeRefused,
    order_dispute_open,
    order_dispute_refund,
    order_dispute_release,
    order_dispute_replace_key,
    order_dispute_split,
    split_amounts,
)
from escrow.gateways import (
    GATEWAYS,
    Gateway,
    GatewayEvent,
    WebhookRejected,
    gateway_enabled,
    gateway_for_checkout,
    gateway_get,
    gateways_enabled,
)
from escrow.links import order_link  # noqa: F401  (re-exported: the buyer's link in others' e-mails)
from escrow.locks import (
    order_lock,
    payment_order_from_row,
    payment_order_locked_column,
    payment_order_locked_sql,
)
from escrow.models import (
    ORDER_TRANSITIONS,
    PAYMENT_TRANSITIONS,
    AccountKind,
    KeyDisposition,
    LedgerAccount,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    WebhookEvent,
    token_hash,
)
from escrow.notifications import order_delivered_notify, orders_link_email_due  # noqa: F401  (re-exported)

# Re-exported so callers find every escrow write through this module.
from escrow.releases import (  # noqa: F401
    fee_percent_for,
    hold_release,
    orders_release_due,
    reserves_release_due,
)
from escrow.selectors import ORDER_PK_MAX, buyer_spent_since
from shop import services as shop_services
from shop.models import Product, WebhookEventType
from shop.pricing import price_for

logger = logging.getLogger(__name__)


class CheckoutError(Refused):
    """A checkout that cannot go ahead; `code` is the API's machine code, the message is for people."""

    code_statuses = {
        **Refused.code_statuses,
        "reservation_limit": 409,
        "spending_limit": 403,
        "no_gateway": 503,
        "coupon_used_up": 409,
        "window_passed": 409,
    }
    code_fields = {
        "not_for_sale": "product",
        "unknown_gateway": "gateway",
        "gateway_unavailable": "gateway",
        "gateway_currency": "gateway",
        "coupon_unknown": "coupon",
        "coupon_expired": "coupon",
    }


class PayAgainError(CheckoutError):
    """`order_pay_again` refused (its codes are not checkout's: the API never pays again)."""


class KeysNotDelivered(Refused):
    status_code = 409

    def __init__(self, order_pk: int):
        super().__init__(_("The keys are not delivered yet."), code="not_delivered")
        self.order_pk = order_pk


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    access_token: str
    payment: Payment
    pay_url: str


def order_page_path(order: Order, access_token: str) -> str:
    return reverse("escrow:order_guest", kwargs={"pk": order.pk, "token": access_token})


def order_max_quantity(product) -> int:
    """The most keys one order of `product` may take: its own limit, never above the shop's."""
    return max(1, min(product.max_per_order, settings.ORDER_MAX_QUANTITY))


def _reservation_caps_check(*, held: dict[str, int], quantity: int) -> None:
    """Refuse a checkout that would let one e-mail or one address hold more keys in unpaid orders than
    allowed (hoarding stock without paying). `held`: what each identity holds unpaid besides this order,
    counted inside the checkout's transaction under a lock per identity (escrow/checkout_sql.py), so
    concurrent checkouts of one buyer are counted one after the other."""
    caps = {"email": settings.RESERVATION_MAX_KEYS_PER_EMAIL, "ip": settings.RESERVATION_MAX_KEYS_PER_IP}
    for name, held_keys in held.items():
        cap = caps[name]
        if held_keys + quantity > cap:
            raise CheckoutError(
                _(
                    "You already hold %(held)d keys in unpaid orders (at most %(cap)d at a time). "
                    "Pay or cancel them, or wait until they expire."
                )
                % {"held": held_keys, "cap": cap},
                code="reservation_limit",
            )


def _checkout_gateway(*, name: str | None, currency: str) -> Gateway:
    """The gateway this order is paid through: the one asked for, or the first enabled one that takes
    the order's currency. Refuses an unknown name, one not configured here, or one without the currency."""
    if name is not None and name not in GATEWAYS:
        raise CheckoutError(
            _("Unknown payment method %(name)s. Choose one of: %(names)s.")
            % {"name": name, "names": ", ".join(gateways_enabled())},
            code="unknown_gateway",
        )
    if name is not None and not gateway_enabled(name):
        raise CheckoutError(
            _("The payment method %(name)s is not available here. Choose one of: %(names)s.")
            % {"name": name, "names": ", ".join(gateways_enabled())},
            code="gateway_unavailable",
        )
    gateway = gateway_for_checkout(name, currency=currency)
    if gateway is None:
        raise CheckoutError(
            _("No payment method available here takes payments in %(currency)s.") % {"currency": currency},
            code="gateway_currency",
        )
    return gateway


def _order_place(
    *,
    product_pk: int,
    quantity: int,
    email: str,
    buyer: User | None,
    now: datetime,
    ip: str | None = None,
    gateway_name: str | None = None,
    pay_method: str = "",
    coupon_code: str = "",
    language: str = "",
    checkout_risk: "_CheckoutRisk | None" = None,
) -> PlacedOrder:
    """Create an order, reserve its keys for the payment window, and open a payment at the gateway.

    `gateway_name` chooses the gateway (default: the first enabled one that takes the product's
    currency); `pay_method` is passed to it (epay's alipay / wxpay / qqpay, Alipay's "wap" for phones).
    The price is the server's alone (`shop.pricing`): the product's wholesale tier for `quantity`, less
    the coupon `coupon_code` if it is valid for the product now; its use is counted in this transaction
    (`coupon_redeem`), so a coupon is never taken past its limit and a refused checkout uses none.
    `language` (the page's, at checkout) is kept for every e-mail about the order. A signed-in buyer's
    daily spending limit is checked against that price.

    Either all of it happens or nothing does: out of stock, no gateway to pay through (or not the one
    asked for), a coupon that is unknown, expired or used up, a spending limit crossed, or a buyer (by
    e-mail or by `ip`) already holding the most keys allowed in unpaid orders, leaves no order behind
    and reserves nothing.

    `checkout_risk`: the risk engine's assessment (`order_place_assessed`), read with the product,
    decided once the product is read, before anything is checked or reserved (it may raise to refuse),
    and on PostgreSQL written by the order's own statement, naming the order.
    """
    if not gateways_enabled():
        raise CheckoutError(
            _("Payments are not available right now, so nothing was ordered. Please try again later."),
            code="no_gateway",
        )
    # On PostgreSQL this read also takes the per-identity locks the reservation caps are counted under,
    # draws the order's id and reads what the risk engine asks (escrow/checkout_sql.py): the checkout's
    # statements are this one and order_write's, which also writes the risk engine's decision.
    identities = checkout_identities(email=email, ip=ip or None)
    risk_read = checkout_risk.read_sql() if checkout_risk is not None else None
    read = checkout_product_read(
        product_pk=product_pk, identities=identities, risk_read=risk_read, several_keys=quantity > 1
    )
    if read is None:
        raise CheckoutError(_("This product is not for sale."), code="not_for_sale")
    product, order_pk, risk_value = read
    if checkout_risk is not None:
        checkout_risk.decide(product, risk_value)
    gateway = _checkout_gateway(name=gateway_name, currency=product.currency)
    most = order_max_quantity(product)
    if not 1 <= quantity <= most:
        raise CheckoutError(_("Quantity must be between 1 and %(max)d.") % {"max": most}, code="bad_quantity")
    try:
        validate_email(email)
    except ValidationError:
        raise CheckoutError(_("Enter a valid e-mail address."), code="bad_email") from None
    # The syntax allows up to 320 characters; the order stores 254 (the longest address SMTP can deliver).
    email_max = Order._meta.get_field("email").max_length
    if len(email) > email_max:
        raise CheckoutError(
            _("An e-mail address can be at most %(max)d characters long.") % {"max": email_max}, code="bad_email"
        )
    coupon = None
    if coupon_code.strip():
        try:
            coupon = shop_services.coupon_for_checkout(product=product, code=coupon_code, now=now)
        except shop_services.ShopError as refused:
            raise CheckoutError(str(refused), code=refused.code) from None
    price = price_for(product, quantity=quantity, coupon=coupon)

    access_token = secrets.token_urlsafe(24)
    signed_in = buyer if buyer is not None and buyer.is_authenticated else None
    order = Order(
        pk=order_pk,
        buyer=signed_in,
        email=email,
        product=product,
        merchant=product.merchant,
        quantity=quantity,
        unit_price=price.unit_price,
        discount=price.discount,
        coupon=coupon,
        amount=price.total,
        currency=product.currency,
        access_token_hash=token_hash(access_token),
        checkout_ip=ip or None,
        language=(language or "")[:16],
        created_at=now,
        expires_at=now + timedelta(minutes=settings.RESERVATION_MINUTES),
    )
    payment = Payment(
        order=order,
        gateway=gateway.name,
        payment_id=gateway.payment_id_new(),
        amount=order.amount,
        currency=order.currency,
        created_at=now,
    )
    placed_data = {"quantity": quantity}
    if coupon is not None:
        placed_data |= {"coupon": coupon.code, "discount": price.discount}
    # Written before the caps, the limit and the stock are checked: a refusal below raises, and the
    # checkout's transaction rolls all of it back (the refusals keep their order of precedence).
    written = order_write(
        order=order,
        payment=payment,
        identities=identities,
        audit={"action": AuditAction.ORDER_PLACED, "now": now, "actor": buyer, "data": placed_data},
        decision=checkout_risk.write_sql(order_pk=order.pk) if checkout_risk is not None else None,
    )
    if written.decision_pk is not None:
        checkout_risk.written(written.decision_pk)
    _reservation_caps_check(held=written.held, quantity=quantity)
    if refusal := spending_limit_refusal(
        user=buyer,
        currency=product.currency,
        amount=price.total,
        now=now,
        spent_since=lambda since: buyer_spent_since(
            buyer=buyer, currency=product.currency, since=since, excluding_order_pk=order.pk
        ),
    ):
        raise CheckoutError(refusal, code="spending_limit")
    if written.reserved < quantity:
        raise CheckoutError(_("Sorry, not enough stock left for this quantity."), code="out_of_stock")
    if coupon is not None:
        # Last: the coupon's row stays locked by its UPDATE only until this transaction commits.
        try:
            shop_services.coupon_redeem(coupon=coupon, now=now)
        except shop_services.ShopError as refused:
            raise CheckoutError(str(refused), code=refused.code) from None

    page = order_page_path(order, access_token)
    # No e-mail task here: the link goes with the keys, or by the beat a minute later (orders_link_email_due).
    logger.info("escrow.order_placed", extra={"order": order.pk})
    return PlacedOrder(
        order=order,
        access_token=access_token,
        payment=payment,
        pay_url=_pay_url(gateway, payment=payment, return_url=page, method=pay_method),
    )


def _pay_url(gateway: Gateway, *, payment: Payment, return_url: str, method: str) -> str:
    # Only the gateways with a choice of method take one (epay's wallets, Alipay's phone pay).
    if method and "method" in inspect.signature(gateway.pay_url).parameters:
        return gateway.pay_url(payment=payment, return_url=return_url, method=method)
    return gateway.pay_url(payment=payment, return_url=return_url)


# The checkout on its own, in its own (durable) transaction.
order_place = transaction.atomic(durable=True)(_order_place)


class _RiskRefusal(Exception):
    """Rolls the checkout's transaction back when the risk engine refuses it; its decision is then
    stored on its own (order_place_assessed)."""


class _CheckoutRisk:
    """The risk engine's part of one checkout (`order_place_assessed`), in `_order_place`'s statements:
    its read is sent with the product's (`read_sql`; with Redis its exchange goes out first), the act
    is decided once the product is read (`decide`), and its decision is written by the order's
    statement, naming the order (`write_sql`, then `written`). Where the engine cannot (SQLite, or a
    decision that opens a review item) `decision_pk` stays None and the caller stores it."""

    def __init__(
        self, *, context: risk.RiskContext, challenge_passed: bool, now: datetime, rate: RateAttempt | None = None
    ):
        self.context, self.challenge_passed, self.now, self.rate = context, challenge_passed, now, rate
        self.started = None  # risk.AssessmentStarted, once read_sql ran
        self.assessment = None  # decided
        self.decision_pk = None  # stored by the order's statement (no Decision instance: nobody reads it)

    def read_sql(self) -> tuple[str, list] | None:
        self.started = risk.assessment_start(event="checkout", context=self.context, now=self.now, rate=self.rate)
        return self.started.read_sql()

    def decide(self, product: Product, read) -> None:
        quantity = self.context.quantity
        self.assessment = self.started.decide(
            read=read,
            product_id=product.pk,
            amount=product.price * quantity if isinstance(quantity, int) else None,
            currency=product.currency,
            merchant_id=product.merchant_id,
        )
        if self.assessment.refuses(challenge_passed=self.challenge_passed):
            raise _RiskRefusal

    def write_sql(self, *, order_pk: int) -> tuple[str, list] | None:
        members = self.assessment.store_sql(
            name="decision", subject=("order", order_pk), challenge_passed=self.challenge_passed
        )
        if members is None:
            return None
        sql, params, _finish = members
        return sql, params

    def written(self, decision_pk: int) -> None:
        self.decision_pk = decision_pk


def order_place_assessed(
    *,
    risk_context: risk.RiskContext,
    challenge_passed: bool = False,
    rate: RateAttempt | None = None,
    **order: object,
) -> PlacedOrder:
    """`order_place` behind the risk engine, in ONE transaction: the checkout is assessed (its amount,
    quantity, product, merchant) with what the product's read also read, before anything is reserved;
    the decision is written by the same transaction, naming the order (on PostgreSQL by the order's
    own statement). A block, or a challenge the buyer has not just passed, raises `risk.RiskRefused`
    (403 with the decision's id) and places nothing; a `review` places the order, which is held for
    staff once paid (`payment_succeeded`).

    Every attempt keeps its decision: a checkout refused (by risk, or for stock, a coupon, a bad
    address…) rolls back, and its decision is then stored on its own (one statement), without a
    subject, so it still counts in the velocity windows and staff can read why it was refused.

    `rate`: the request's checkout rate-limit attempt (`core.ratelimit.RateAttempt`), counted by the
    engine's Redis command before anything is read (one round trip instead of two), or on its own
    where there is none; over the limit `RateLimited` is raised, nothing is placed and no decision is
    kept. A checkout refused before the engine read anything (no gateway) leaves it uncounted: the
    caller counts it (`RateAttempt.count`) on its way out."""
    now = order["now"]
    quantity = order.get("quantity")
    context = risk_context.replace(quantity=quantity)
    checkout_risk = _CheckoutRisk(context=context, challenge_passed=challenge_passed, now=now, rate=rate)
    try:
        with transaction.atomic(durable=True):
            placed = _order_place(**order, checkout_risk=checkout_risk)
            if checkout_risk.decision_pk is None:
                checkout_risk.assessment.store(subject=("order", placed.order.pk), challenge_passed=challenge_passed)
    except (_RiskRefusal, Refused):
        assessment = checkout_risk.assessment
        if assessment is None and checkout_risk.started is not None:  # the product is not for sale
            assessment = checkout_risk.started.decide(product_id=order.get("product_pk"))
        elif assessment is None:  # refused before anything was read: no gateway
            context = context.replace(product_id=order.get("product_pk"))
            assessment = risk.assessment_prepare(event="checkout", context=context, now=now)
        decision = assessment.store()
        risk.decision_enforce(decision=decision, challenge_passed=challenge_passed)
        raise
    except BaseException:
        if checkout_risk.started is not None:
            checkout_risk.started.abandon()  # an exchange sent whose reply nobody will read
        raise
    return placed


def order_lookup_request(*, email: str, order_number: int, now: datetime) -> None:
    """A buyer without the link asks for it: if order `order_number` was placed with `email` (any
    case), a fresh signed link to it is e-mailed to that address, after the commit. The caller says the
    same thing whatever happened and never shows the link, so nobody reads another's order by guessing
    an address, and nobody learns whether an order exists. The caller rate-limits."""
    if not 0 < order_number <= ORDER_PK_MAX:
        return
    order_pk = Order.objects.filter(pk=order_number, email__iexact=email.strip()).values_list("pk", flat=True).first()
    if order_pk is None:
        logger.info("escrow.order_lookup_unmatched")
        return
    from escrow.tasks import order_email_task

    transaction.on_commit(lambda: order_email_task.delay(order_pk=order_pk, event="lookup"), robust=True)
    logger.info("escrow.order_lookup_sent", extra={"order": order_pk, "at": now.isoformat()})


@transaction.atomic(durable=True)
def order_pay_again(*, order_pk: int, now: datetime, return_url: str = "") -> PlacedOrder:
    """A new payment for an order whose payment failed, while its payment window is still open.

    The failure cancelled the order and put its keys back; here they are taken again (`SKIP LOCKED`, as
    at checkout) and the order awaits payment once more until its original `expires_at`, with a new
    payment at the gateway for the same amount (tier and coupon as placed: the coupon's use stays
    counted once). Refuses, changing nothing: `bad_state` (not an order whose payments all failed),
    `window_passed` (start a fresh checkout), `out_of_stock`, `no_gateway`.
    """
    order = order_lock(order_pk)
    payments = list(order.payments.order_by("pk"))
    # The way the buyer chose last time, if it is still on offer; else the first that takes the currency.
    tried = payments[-1].gateway if payments else None
    gateway = gateway_for_checkout(tried, currency=order.currency) or gateway_for_checkout(currency=order.currency)
    if gateway is None:
        raise PayAgainError(_("Payments are not available right now. Please try again later."), code="no_gateway")
    if order.status != OrderStatus.CANCELLED or any(p.status != PaymentStatus.FAILED for p in payments):
        raise PayAgainError(_("This order cannot be paid again."), code="bad_state")
    if order.expires_at <= now:
        raise PayAgainError(_("The time to pay for this order has passed. Please order again."), code="window_passed")
    try:
        with transaction.atomic():
            shop_services.keys_reserve(product=order.product, quantity=order.quantity, order_pk=order.pk)
    except shop_services.OutOfStock:
        raise PayAgainError(_("Sorry, not enough stock left for this quantity."), code="out_of_stock") from None
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.AWAITING_PAYMENT, from_=[OrderStatus.CANCELLED])
    payment = Payment.objects.create(
        order=order,
        gateway=gateway.name,
        payment_id=gateway.payment_id_new(),
        amount=order.amount,
        currency=order.currency,
        created_at=now,
    )
    audit_record(
        action=AuditAction.PAYMENT_RETRIED, subject=order, now=now, data={"payment": payment.pk, "after": len(payments)}
    )
    order.refresh_from_db(fields=["status"])
    return PlacedOrder(
        order=order,
        access_token="",
        payment=payment,
        pay_url=gateway.pay_url(payment=payment, return_url=return_url),
    )


def webhook_receive(*, gateway_name: str, body: bytes, headers, now: datetime) -> str:
    """Handle one gateway webhook: verify, find the payment, drop replays, then act exactly once.

    Raises `WebhookRejected` (answer 400, nothing changed) for a bad signature, body or payment, or an
    event type without a handler in `WEBHOOK_HANDLERS`. Returns "processed" or "duplicate".
    """
    try:
        result = _webhook_receive(gateway_name=gateway_name, body=body, headers=headers, now=now)
    except WebhookRejected:
        metric_count("webhooks", {"gateway": gateway_name, "outcome": "rejected"})
        raise
    metric_count("webhooks", {"gateway": gateway_name, "outcome": result})
    return result


def _webhook_receive(*, gateway_name: str, body: bytes, headers, now: datetime) -> str:
    gateway = gateway_get(gateway_name)
    event = gateway.webhook_parse(body=body, headers=headers, now=now)
    handler = WEBHOOK_HANDLERS.get(event.type)
    if handler is None:
        raise WebhookRejected("Unknown event type.")
    if not (event.payment_id or event.provider_reference):
        raise WebhookRejected("Unknown payment.")
    if event.type in WEBHOOK_LOCKS_PAYMENT_AND_ORDER:
        # The hot path (every purchase): payment and order locked and the event recorded in ONE statement.
        with transaction.atomic(durable=True):
            recorded = _webhook_event_record_locking(gateway=gateway.name, event=event, now=now)
            if recorded is None:  # rolls back the transaction, which wrote nothing
                raise WebhookRejected("Unknown payment.")
            payment, first, risk_subject = recorded
            if not first:
                return "duplicate"
            with ledger.balances_deferred():
                handler(payment=payment, event=event, now=now, risk_subject=risk_subject)
        return "processed"
    payments = Payment.objects.filter(gateway=gateway.name)
    if event.payment_id:
        payment = payments.filter(payment_id=event.payment_id).first()
    else:  # an event that knows only the provider's id of the payment (a Stripe refund or chargeback)
        payment = payments.filter(provider_reference=event.provider_reference).first()
    if payment is None:
        raise WebhookRejected("Unknown payment.")
    with transaction.atomic(durable=True):
        # The unique (gateway, event_id) decides first-or-replay in the insert itself (ON CONFLICT DO
        # NOTHING): no savepoint, and a replay waits for the first delivery of the event to commit.
        if not _webhook_event_record(gateway=gateway.name, event=event, payment=payment, now=now):
            return "duplicate"
        # Last in the transaction: the shared platform balances stay locked only for the commit.
        with ledger.balances_deferred():
            handler(payment=payment, event=event, now=now)
    return "processed"


def _webhook_event_record(*, gateway: str, event: GatewayEvent, payment: Payment, now: datetime) -> bool:
    """Insert the event's WebhookEvent row; False (nothing written) if the gateway sent it before.

    One `INSERT … ON CONFLICT DO NOTHING RETURNING`: the unique (gateway, event_id) decides, a replay
    racing the first delivery waits for it to commit, and no savepoint is needed to survive the clash.
    """
    connection = transaction.get_connection()
    body = WebhookEvent._meta.get_field("body").get_db_prep_save(event.body, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO escrow_webhookevent (gateway, event_id, event_type, payment_id, received_at, body) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
            [gateway, event.event_id, event.type, payment.pk, now, body],
        )
        return cursor.fetchone() is not None


def _webhook_event_record_locking(
    *, gateway: str, event: GatewayEvent, now: datetime
) -> tuple[Payment, bool, risk.RiskContext | None] | None:
    """Lock the event's payment (by the shop's id, else by the provider's) and its order, and insert the
    event's WebhookEvent row, in ONE statement; (the payment with its locked order, whether the event is
    new, who checked the order out as the risk engine knows them: `risk.subject_context`), or None for
    an unknown payment (nothing written).

    The locks come first (payment, then order: `locks.payment_order_locked_sql`), then the insert `ON
    CONFLICT DO NOTHING`: a copy of the event racing the first waits on the payment's lock until the
    first commits, then finds the event there (a replay); no savepoint is needed to survive the clash.
    The risk engine's read of the order's decisions rides in the same statement (`risk.subject_context_sql`).
    """
    connection = transaction.get_connection()
    by = "payment_id" if event.payment_id else "provider_reference"
    reference = event.payment_id or event.provider_reference
    if not on_postgresql():  # SQLite (the demo): no row locks, one writer at a time anyway
        found = Payment.objects.filter(gateway=gateway, **{by: reference}).select_related("order__merchant")
        payment = found.order_by("pk").first()
        if payment is None:
            return None
        first = _webhook_event_record(gateway=gateway, event=event, payment=payment, now=now)
        return payment, first, risk.subject_context(("order", payment.order_id)) if first else None
    body = WebhookEvent._meta.get_field("body").get_db_prep_save(event.body, connection)
    locked = payment_order_locked_sql(f"escrow_payment.gateway = %s AND escrow_payment.{by} = %s")
    order_pk = payment_order_locked_column(Order, "id")
    subject, subject_params = risk.subject_context_sql(subject_type="order", subject_id_sql=f"locked.{order_pk}::text")
    # Raw SQL on the hot path: the ORM cannot lock and insert in one statement, and compiling the three
    # statements it took was a good part of the webhook's CPU. Every value is a parameter.
    sql = (
        f"WITH locked AS MATERIALIZED ({locked}), "  # noqa: S608
        "event AS (INSERT INTO escrow_webhookevent (gateway, event_id, event_type, payment_id, received_at, body) "
        "SELECT %s, %s, %s, locked.c0, %s, %s FROM locked ON CONFLICT DO NOTHING RETURNING id) "
        f"SELECT locked.*, EXISTS (SELECT FROM event), {subject} FROM locked"
    )
    with connection.cursor() as cursor:
        prepared.execute(
            cursor, sql, [gateway, reference, gateway, event.event_id, event.type, now, body, *subject_params]
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return payment_order_from_row(row[:-2]), row[-2], risk.subject_context_from(row[-1])


def _payment_and_order_paid(
    *,
    payment: Payment,
    order: Order,
    event: GatewayEvent,
    now: datetime,
    audit_data: dict,
    decision: tuple[str, list] | None = None,
) -> int | None:
    """The payment to `succeeded` (what arrived recorded) and its order to `paid`, each a compare-and-set
    from its transition map's sources, and the audit line `payment.succeeded` with `audit_data`, in ONE
    statement: the order moves only if the payment did, and `StateError` (rolling everything back,
    the audit line too) unless both did. Both rows are the caller's, locked. `decision`: the risk
    engine's decision as members of the statement's `WITH` list (`risk.Assessment.store_sql(name=
    "decision")`), written by the same statement; its id is returned."""
    received = {
        "settled_at": now,
        "received_amount": event.amount,
        "received_currency": event.currency,
        "provider_reference": event.provider_reference,
    }
    audit = {"action": AuditAction.PAYMENT_SUCCEEDED, "subject": order, "now": now, "data": audit_data}
    connection = transaction.get_connection()
    if not on_postgresql():  # SQLite (the demo) has no write inside a WITH: one by one
        assert decision is None, "decision is PostgreSQL's"
        PAYMENT_TRANSITIONS.apply(model=Payment, pk=payment.pk, to=PaymentStatus.SUCCEEDED, mirror=payment, **received)
        ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.PAID, mirror=order, paid_at=now)
        audit_record(**audit)
        return None
    audit_insert, audit_params = audit_record_sql(**audit)
    decision_members, decision_params = decision or ("", [])
    # Raw SQL: one round trip instead of three, and no ORM compile on every purchase. Only placeholders
    # and the audit row's INSERT (built from its model, never from input) are formatted in.
    sql = (
        "WITH payment AS (UPDATE escrow_payment SET status = %s, settled_at = %s, received_amount = %s, "  # noqa: S608
        "received_currency = %s, provider_reference = %s WHERE id = %s AND status = ANY(%s) RETURNING id), "
        "paid AS (UPDATE escrow_order SET status = %s, paid_at = %s "
        "WHERE id = %s AND status = ANY(%s) AND EXISTS (SELECT FROM payment) RETURNING id), "
        f"audit AS ({audit_insert})"
        f"{', ' + decision_members if decision else ''} "
        f"SELECT id{', (SELECT id FROM decision)' if decision else ''} FROM paid"
    )
    params = [
        str(PaymentStatus.SUCCEEDED),
        *received.values(),
        payment.pk,
        PAYMENT_TRANSITIONS.sources(PaymentStatus.SUCCEEDED),
        str(OrderStatus.PAID),
        now,
        order.pk,
        ORDER_TRANSITIONS.sources(OrderStatus.PAID),
        *audit_params,
        *decision_params,
    ]
    with connection.cursor() as cursor:
        prepared.execute(cursor, sql, params)
        row = cursor.fetchone()
    if row is None:
        raise StateError(Order._meta.label, order.pk, OrderStatus.PAID)
    for name, value in {"status": PaymentStatus.SUCCEEDED, **received}.items():
        setattr(payment, name, value)
    order.status, order.paid_at = OrderStatus.PAID, now
    return row[1] if decision else None


def payment_succeeded(
    *, payment: Payment, event: GatewayEvent, now: datetime, risk_subject: risk.RiskContext | None
) -> Order:
    """Money arrived. Book it into escrow, hold the merchant's share, and queue delivery on commit.

    `payment` comes locked with its order (`payment.order`, with the merchant), in that order, as
    `webhook_receive` takes them (`WEBHOOK_LOCKS_PAYMENT_AND_ORDER`), with who checked the order out
    as the risk engine knows them (`risk_subject`, read in the same statement).

    A second confirmation of the same payment does nothing. An amount or currency that differs from
    the order's holds the order for review and delivers nothing. A success after the payment failed
    (the order was cancelled) is a late payment: delivered if stock is there, else refunded in full.
    """
    assert transaction.get_connection().in_atomic_block
    order = payment.order
    if not PAYMENT_TRANSITIONS.can(payment.status, PaymentStatus.SUCCEEDED):
        return order
    if payment.status == PaymentStatus.FAILED:
        logger.warning("escrow.payment_succeeded_after_failure", extra={"order": order.pk, "payment": payment.pk})
    if order.status not in ORDER_PAYABLE:
        # Another payment of this order paid it first (a failed payment succeeding after "pay again"
        # opened a new one): this money was never the order's, so all of it goes straight back.
        _payment_duplicate_refund(payment=payment, order=order, event=event, now=now)
        return order

    if event.amount != payment.amount or event.currency != payment.currency:
        _payment_into_suspense(payment=payment, order=order, event=event, now=now)
        ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.HELD_FOR_REVIEW, paid_at=now)
        audit_record(
            action=AuditAction.PAYMENT_MISMATCHED,
            subject=order,
            now=now,
            data={"expected": [payment.amount, payment.currency], "received": [event.amount, event.currency]},
        )
        logger.warning("escrow.payment_mismatched", extra={"order": order.pk, "payment": payment.pk})
        risk.review_open(
            kind="order",
            subject_id=order.pk,
            email=order.email,
            now=now,
            reasons=[
                {
                    "rule": "amount_mismatch",
                    "signal": "received",
                    "value": f"{event.amount} {event.currency}",
                    "threshold": f"{payment.amount} {payment.currency}",
                }
            ],
        )
        return order

    late = order.status != OrderStatus.AWAITING_PAYMENT
    # On time, the risk engine's `payment` assessment is decided now and its decision written by the
    # statement that marks the order paid: before the money is booked, as it would be on its own.
    # A late payment is assessed once its keys are reserved again (below).
    assessment = None if late else _payment_assessment(order=order, risk_subject=risk_subject, now=now)
    decision_sql = assessment.store_sql(name="decision", subject=("order", order.pk)) if assessment else None
    decision_pk = _payment_and_order_paid(
        payment=payment,
        order=order,
        event=event,
        now=now,
        audit_data={"payment": payment.pk, "late": late},
        decision=decision_sql[:2] if decision_sql else None,
    )
    decision = decision_sql[2](decision_pk) if decision_sql else None
    webhook_events.order_event_emit(
        order=order, event_type=WebhookEventType.ORDER_PAID, status=OrderStatus.PAID, now=now
    )
    # The amount and currency match the order's from here on: all four accounts in one query.
    clearing, escrow, available, fees = ledger.accounts(
        (AccountKind.GATEWAY_CLEARING, order.currency, None),
        (AccountKind.ESCROW, order.currency, None),
        (AccountKind.MERCHANT_AVAILABLE, order.currency, order.merchant_id),
        (AccountKind.PLATFORM_FEES, order.currency, None),
    )
    paid_in = ledger.Move(
        transfer_id=f"payment:{payment.pk}", debit=clearing, credit=escrow, amount=order.amount, code="payment"
    )

    if late and not _reserve_again(order):
        # A paid buyer is never left with "out of stock": the whole amount goes back through the gateway.
        ledger.transfers(moves=[paid_in], order=order, now=now)
        order.refresh_from_db(fields=["status"])
        refunds.order_refund_book(
            order=order,
            payment=payment,
            now=now,
            key_pks=None,
            disposition=KeyDisposition.RESTOCK,
            reason="no_stock_after_late_payment",
            actor=None,
        )
        return order

    if decision is None:  # late, or a decision that opens a review item: stored on its own
        assessment = assessment or _payment_assessment(order=order, risk_subject=risk_subject, now=now)
        decision = assessment.store(subject=("order", order.pk))
    held = _payment_held_by_risk(order=order, decision=decision, now=now)
    # Last: the money in, and the merchant's share and the fee held out of escrow, booked with the
    # balances they change in ONE statement, so the shared platform balances stay locked only for the
    # commit (as `balances_deferred` would keep them, one statement sooner).
    ledger.transfers_closing(
        moves=[paid_in, *_holds(order=order, escrow=escrow, available=available, fees=fees)], order=order, now=now
    )
    if held:
        return order
    # Never raises after the commit: if the broker is down the sweeper delivers (escrow/delivery.py).
    transaction.on_commit(lambda: order_delivery_enqueue(order_pk=order.pk))
    return order


def _payment_assessment(*, order: Order, risk_subject: risk.RiskContext | None, now: datetime):
    """The `payment` assessment of a paid order, decided, not stored: the person is the checkout's
    (`risk_subject`: its first decision's identities), else the order's buyer and e-mail."""
    context = risk_subject or risk.RiskContext(actor_id=order.buyer_id, email=order.email)
    context = dataclasses.replace(
        context,
        amount=order.amount,
        currency=order.currency,
        quantity=order.quantity,
        product_id=order.product_id,
        merchant_id=order.merchant_id,
    )
    return risk.assessment_prepare(event="payment", context=context, now=now, subject=("order", order.pk))


def _payment_held_by_risk(*, order: Order, decision, now: datetime) -> bool:
    """The `payment` decision about a paid order, before delivery (and before its money is booked, in
    the same transaction). Money that arrived is never turned away here: anything but allow (or
    challenge, which a paid buyer already passed at checkout) holds the paid order for staff
    (`held_for_review`), who deliver or refund it in full."""
    if decision.outcome in {risk.Outcome.ALLOW, risk.Outcome.CHALLENGE}:
        return False
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.HELD_FOR_REVIEW)
    risk.review_open(kind="order", subject_id=order.pk, email=order.email, decision=decision, now=now)
    audit_record(action=AuditAction.ORDER_HELD, subject=order, now=now, data={"decision": decision.pk})
    logger.info("escrow.order_held_by_risk", extra={"order": order.pk, "decision": decision.pk})
    return True


# An order a payment may still pay: unpaid, or lapsed or cancelled (a late payment).
ORDER_PAYABLE = {OrderStatus.AWAITING_PAYMENT, OrderStatus.EXPIRED, OrderStatus.CANCELLED}


def _payment_into_suspense(*, payment: Payment, order: Order, event: GatewayEvent, now: datetime) -> None:
    """Money that is not (or not exactly) the order's: the payment is marked mismatched and what arrived
    is booked from the gateway's clearing account into suspense, where staff decide on it."""
    clearing, suspense = ledger.accounts(
        (AccountKind.GATEWAY_CLEARING, event.currency, None), (AccountKind.SUSPENSE, event.currency, None)
    )
    PAYMENT_TRANSITIONS.apply(
        model=Payment,
        pk=payment.pk,
        to=PaymentStatus.MISMATCHED,
        settled_at=now,
        received_amount=event.amount,
        received_currency=event.currency,
        provider_reference=event.provider_reference,
    )
    ledger.transfer(
        transfer_id=f"payment:{payment.pk}",
        debit=clearing,
        credit=suspense,
        amount=event.amount,
        code="payment_mismatch",
        order=order,
        now=now,
    )


def _payment_duplicate_refund(*, payment: Payment, order: Order, event: GatewayEvent, now: datetime) -> None:
    """Book a second successful payment of an already paid order into suspense and refund it in full."""
    _payment_into_suspense(payment=payment, order=order, event=event, now=now)
    payment.refresh_from_db(fields=["status", "received_amount", "received_currency"])
    audit_record(
        action=AuditAction.PAYMENT_MISMATCHED,
        subject=order,
        now=now,
        data={"payment": payment.pk, "duplicate": True, "received": [event.amount, event.currency]},
    )
    refunds.received_refund_book(
        order=order, payment=payment, amount=event.amount, reason="duplicate_payment", actor=None, note="", now=now
    )
    logger.warning("escrow.payment_duplicate_refunded", extra={"order": order.pk, "payment": payment.pk})


def _reserve_again(order: Order) -> bool:
    """A late payment: take the order's keys again if stock is there (its reservation had lapsed)."""
    try:
        with transaction.atomic():
            shop_services.keys_reserve(product=order.product, quantity=order.quantity, order_pk=order.pk)
    except shop_services.OutOfStock:
        return False
    return True


def _holds(*, order: Order, escrow: LedgerAccount, available: LedgerAccount, fees: LedgerAccount) -> list[ledger.Move]:
    """The merchant's share and the platform fee, held as pending transfers out of escrow."""
    fee = percent_of(order.amount, fee_percent_for(order.merchant))
    share = order.amount - fee
    holds = [
        ledger.Move(
            transfer_id=f"order:{order.pk}:share",
            debit=escrow,
            credit=available,
            amount=share,
            code="share",
            pending=True,
        ),
        ledger.Move(
            transfer_id=f"order:{order.pk}:fee", debit=escrow, credit=fees, amount=fee, code="fee", pending=True
        ),
    ]
    return [hold for hold in holds if hold.amount]


def payment_failed(*, payment: Payment, now: datetime, risk_subject: risk.RiskContext | None) -> None:
    """The buyer's payment failed at the gateway: cancel the unpaid order and return its keys.

    `payment` comes locked with its order (`payment.order`), and `risk_subject`, as for `payment_succeeded`."""
    assert transaction.get_connection().in_atomic_block
    order = payment.order
    if payment.status != PaymentStatus.PENDING:
        return
    PAYMENT_TRANSITIONS.apply(model=Payment, pk=payment.pk, to=PaymentStatus.FAILED, settled_at=now)
    if order.status == OrderStatus.AWAITING_PAYMENT:
        ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.CANCELLED)
        shop_services.keys_release(order_pk=order.pk)
    audit_record(action=AuditAction.PAYMENT_FAILED, subject=order, now=now, data={"payment": payment.pk})
    # Counted against the device, address and e-mail that checked out: card testing shows here.
    risk.outcome_count(counter="payment_failed", context=risk_subject, now=now)


def _payment_succeeded_event(*, payment: Payment, event: GatewayEvent, now: datetime, risk_subject) -> None:
    payment_succeeded(payment=payment, event=event, now=now, risk_subject=risk_subject)


def _payment_failed_event(*, payment: Payment, event: GatewayEvent, now: datetime, risk_subject) -> None:
    payment_failed(payment=payment, now=now, risk_subject=risk_subject)


def _payment_noted_event(*, payment: Payment, event: GatewayEvent, now: datetime) -> None:
    logger.info("escrow.payment_noted", extra={"payment": payment.pk, "event": event.event_id})


# The event types whose handler gets the payment locked with its order (`payment.order`) and the risk
# engine's `subject_context` of the order (`risk_subject`): taken and read by `webhook_receive` itself,
# in the statement that records the event.
WEBHOOK_LOCKS_PAYMENT_AND_ORDER = frozenset({"payment.succeeded", "payment.failed"})

# Gateway event type → its handler, all called alike inside `webhook_receive`'s transaction.
WEBHOOK_HANDLERS: dict[str, Callable[..., object]] = {
    "payment.succeeded": _payment_succeeded_event,
    "payment.failed": _payment_failed_event,
    "refund.succeeded": refunds.refund_succeeded,
    # Stored as evidence, moves nothing (a payment still pending at the provider, a refund notice).
    "payment.noted": _payment_noted_event,
    # The provider took the money back (a chargeback), or refunded beyond the shop's own refunds (a
    # refund made at its dashboard): the merchant's share is taken back (escrow/clawbacks.py).
    "chargeback.created": clawbacks.chargeback_received,
    "payment.refunded": clawbacks.payment_refunded_at_provider,
}


@transaction.atomic(durable=True)
def order_deliver(*, order_pk: int, now: datetime) -> Order:
    """Hand a paid order its keys. Safe to run twice: only a `paid` order is delivered, by a
    compare-and-set whose row lock makes a racing second delivery wait and then find it delivered."""
    marked = order_delivered_mark(order_pk=order_pk, now=now)
    if marked is None:
        return Order.objects.select_related("product", "merchant").get(pk=order_pk)
    order, product, available = marked
    sold = shop_services.keys_sell(order_pk=order.pk)
    if sold != order.quantity:  # the reservation holds exactly `quantity` keys; anything else is a bug
        raise RuntimeError(f"Order {order.pk} has {sold} keys to sell, not {order.quantity}.")
    audit_record(action=AuditAction.ORDER_DELIVERED, subject=order, now=now, data={"keys": order.quantity})
    webhook_events.order_event_emit(
        order=order, event_type=WebhookEventType.ORDER_DELIVERED, status=OrderStatus.DELIVERED, now=now
    )
    # The count came with the order's row (escrow.delivery); e-mails after commit.
    shop_services.product_low_stock_check(product_pk=product.pk, product=product, available=available, now=now)
    # The buyer's "keys ready" e-mail and the merchant's notice of the sale are sent by the worker that
    # delivered, after the commit: no more tasks per purchase (issue 9), and the sweeper's deliveries
    # send them too. Either falls back to a retrying task if it fails there.
    transaction.on_commit(lambda: order_delivered_announce(order_pk=order.pk), robust=True)  # a waiting key read
    transaction.on_commit(lambda: order_delivered_notify(order_pk=order.pk))
    logger.info("escrow.order_delivered", extra={"order": order.pk})
    latency = max(0.0, (now - (order.paid_at or now)).total_seconds())
    transaction.on_commit(
        lambda: metric_observe("delivery_latency", latency, buckets=DELIVERY_LATENCY_BUCKETS), robust=True
    )
    return order


@transaction.atomic(durable=True)
def order_confirm_receipt(*, order: Order, now: datetime, actor: User | None = None) -> Order:
    """The buyer accepts the goods: the held money goes to the merchant and the fee, exactly once."""
    ORDER_TRANSITIONS.apply(
        model=Order, pk=order.pk, to=OrderStatus.COMPLETED, from_=[OrderStatus.DELIVERED], completed_at=now
    )
    audit_record(action=AuditAction.ORDER_COMPLETED, subject=order, now=now, actor=actor, data={"by": "buyer"})
    webhook_events.order_event_emit(
        order=order, event_type=WebhookEventType.ORDER_COMPLETED, status=OrderStatus.COMPLETED, now=now
    )
    with ledger.balances_deferred():
        hold_release(order=order, now=now)
    logger.info("escrow.order_completed", extra={"order": order.pk})
    order.refresh_from_db()
    return order


@transaction.atomic(durable=True)
def order_expire(*, order_pk: int, now: datetime) -> bool:
    """An unpaid order whose payment window has passed: expire it and return its keys to stock."""
    changed = ORDER_TRANSITIONS.update(
        queryset=Order.objects.filter(pk=order_pk, expires_at__lte=now),
        to=OrderStatus.EXPIRED,
        from_=[OrderStatus.AWAITING_PAYMENT],
    )
    if changed:
        shop_services.keys_release(order_pk=order_pk)
        audit_record(action=AuditAction.ORDER_EXPIRED, subject=Order(pk=order_pk), now=now)
    return bool(changed)


def orders_expire_due(*, now: datetime, batch: int = 1000) -> int:
    """Expire every unpaid order past its window, one transaction each (a payment may race one)."""
    due = Order.objects.filter(status=OrderStatus.AWAITING_PAYMENT, expires_at__lte=now).values_list("pk", flat=True)[
        :batch
    ]
    return sum(order_expire(order_pk=pk, now=now) for pk in list(due))


def order_keys_reveal(
    *,
    order: Order,
    now: datetime,
    channel: str,
    ip: str | None,
    user_agent: str,
    user: User | None,
    device: str | None = None,
) -> list[str]:
    """Open the order's keys for its owner, recording who saw them, when and from where.

    At most `RATE_LIMITS["key_reveal"]` per order, from all addresses together: past it this raises
    `RateLimited` and records nothing, so the reveal evidence cannot be flooded.

    The record and the keys are taken under the order's lock (`reveals.order_keys_reveal_record`: one
    statement on PostgreSQL), so a refund deciding whether its keys were ever seen (and may go back on
    sale) is never overtaken by a reveal; an order refunded since `order` was read raises
    `KeysNotDelivered` and records nothing.
    """
    if not order.has_keys:  # `order` may be older than its delivery: ask the row before refusing
        order.refresh_from_db(fields=["status"])
        if not order.has_keys:
            raise KeysNotDelivered(order.pk)
    rate_limit_check(scope="key_reveal", identity=f"order:{order.pk}", now=now.timestamp())
    keys = reveals.order_keys_reveal_record(
        order_pk=order.pk,
        at=now,
        channel=channel,
        ip=ip,
        user_agent=user_agent[:512],
        device=device or "",
        user_pk=user.pk if user is not None and user.is_authenticated else None,
    )
    if keys is None:
        raise KeysNotDelivered(order.pk)
    return keys


# --- accounts: a verified e-mail claims its guest orders ----------------------------------------------


@transaction.atomic
def guest_orders_attach(*, user: User, now: datetime) -> int:
    """Give `user` the guest orders placed with their (just verified) e-mail address, any case; orders
    that already have a buyer stay theirs. Registered in `accounts.hooks.EMAIL_VERIFIED`, so it runs in
    the verification's transaction. Returns how many orders were attached."""
    if not user.email:
        return 0
    pks = list(
        Order.objects.select_for_update()
        .filter(buyer__isnull=True, email__iexact=user.email)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not pks:
        return 0
    Order.objects.filter(pk__in=pks, buyer__isnull=True).update(buyer=user)
    audit_record(
        action=AuditAction.ACCOUNT_GUEST_ORDERS_ATTACHED, subject=user, now=now, actor=user, data={"orders": pks}
    )
    logger.info("escrow.guest_orders_attached", extra={"user": user.pk, "orders": len(pks)})
    return len(pks)
