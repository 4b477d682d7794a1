"""Every write of the escrow app: orders, payments, delivery, the money held and released."""

import logging
import operator
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q, Sum
from django.urls import reverse
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import audit_record
from core.errors import Refused
from core.metrics import DELIVERY_LATENCY_BUCKETS, metric_count, metric_observe
from core.money import percent_of
from core.ratelimit import RateLimited, rate_limit_check  # noqa: F401  (RateLimited: for callers)
from escrow import ledger, refunds
from escrow.delivery import order_delivery_enqueue

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
from escrow.gateways import GatewayEvent, WebhookRejected, gateway_for_checkout, gateway_get
from escrow.locks import checkout_identities_lock, order_lock, payment_lock
from escrow.models import (
    ORDER_TRANSITIONS,
    PAYMENT_TRANSITIONS,
    AccountKind,
    KeyDisposition,
    KeyReveal,
    LedgerAccount,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    WebhookEvent,
    token_hash,
)

# Re-exported so callers find every escrow write through this module.
from escrow.releases import (  # noqa: F401
    fee_percent_for,
    hold_release,
    orders_release_due,
    reserves_release_due,
)
from shop import services as shop_services
from shop.selectors import order_keys_plaintext, products_on_sale

logger = logging.getLogger(__name__)


class CheckoutError(Refused):
    """A checkout that cannot go ahead; `code` is the API's machine code, the message is for people."""

    code_statuses = {**Refused.code_statuses, "reservation_limit": 409, "no_gateway": 503}
    code_fields = {"not_for_sale": "product"}


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


def _reservation_caps_check(*, email: str, ip: str | None, quantity: int) -> None:
    """Refuse a checkout that would let one e-mail or one address hold more keys in unpaid orders than
    allowed (hoarding stock without paying). Runs inside the checkout's transaction, under a lock per
    identity, so concurrent checkouts of one buyer are counted one after the other."""
    identities = [f"email:{email.strip().lower()}"] + ([f"ip:{ip}"] if ip else [])
    checkout_identities_lock(identities)
    # Every identity's holdings in one statement, each sum over its own rows.
    rows = {"email": Q(email__iexact=email.strip())}
    if ip:
        rows["ip"] = Q(checkout_ip=ip)
    held_by = Order.objects.filter(reduce(operator.or_, rows.values()), status=OrderStatus.AWAITING_PAYMENT).aggregate(
        **{name: Sum("quantity", filter=condition) for name, condition in rows.items()}
    )
    caps = {"email": settings.RESERVATION_MAX_KEYS_PER_EMAIL, "ip": settings.RESERVATION_MAX_KEYS_PER_IP}
    for name, held_keys in held_by.items():
        cap = caps[name]
        held = held_keys or 0
        if held + quantity > cap:
            raise CheckoutError(
                _(
                    "You already hold %(held)d keys in unpaid orders (at most %(cap)d at a time). "
                    "Pay or cancel them, or wait until they expire."
                )
                % {"held": held, "cap": cap},
                code="reservation_limit",
            )


@transaction.atomic(durable=True)
def order_place(
    *, product_pk: int, quantity: int, email: str, buyer: User | None, now: datetime, ip: str | None = None
) -> PlacedOrder:
    """Create an order, reserve its keys for the payment window, and open a payment at the gateway.

    Either all of it happens or nothing does: out of stock, no gateway to pay through, or a buyer (by
    e-mail or by `ip`) already holding the most keys allowed in unpaid orders, leaves no order behind
    and reserves nothing.
    """
    gateway = gateway_for_checkout()
    if gateway is None:
        raise CheckoutError(
            _("Payments are not available right now, so nothing was ordered. Please try again later."),
            code="no_gateway",
        )
    product = products_on_sale().filter(pk=product_pk).first()
    if product is None:
        raise CheckoutError(_("This product is not for sale."), code="not_for_sale")
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
    _reservation_caps_check(email=email, ip=ip or None, quantity=quantity)

    access_token = secrets.token_urlsafe(24)
    order = Order.objects.create(
        buyer=buyer if buyer is not None and buyer.is_authenticated else None,
        email=email,
        product=product,
        merchant=product.merchant,
        quantity=quantity,
        unit_price=product.price,
        amount=product.price * quantity,
        currency=product.currency,
        access_token_hash=token_hash(access_token),
        checkout_ip=ip or None,
        created_at=now,
        expires_at=now + timedelta(minutes=settings.RESERVATION_MINUTES),
    )
    try:
        shop_services.keys_reserve(product=product, quantity=quantity, order_pk=order.pk)
    except shop_services.OutOfStock:
        raise CheckoutError(_("Sorry, not enough stock left for this quantity."), code="out_of_stock") from None

    payment = Payment.objects.create(
        order=order,
        gateway=gateway.name,
        payment_id=gateway.payment_id_new(),
        amount=order.amount,
        currency=order.currency,
        created_at=now,
    )
    page = order_page_path(order, access_token)
    audit_record(action=AuditAction.ORDER_PLACED, subject=order, now=now, actor=buyer, data={"quantity": quantity})
    link = settings.SHOP_BASE_URL.rstrip("/") + page

    from escrow.tasks import order_link_email_task

    # robust: the order is committed, so a broker that is down is logged, not a failed checkout.
    transaction.on_commit(lambda: order_link_email_task.delay(order_pk=order.pk, link=link), robust=True)
    logger.info("escrow.order_placed", extra={"order": order.pk})
    return PlacedOrder(
        order=order,
        access_token=access_token,
        payment=payment,
        pay_url=gateway.pay_url(payment_id=payment.payment_id, return_url=page),
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
    payment = Payment.objects.filter(gateway=gateway.name, payment_id=event.payment_id).first()
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


def payment_succeeded(*, payment_pk: int, event: GatewayEvent, now: datetime) -> Order:
    """Money arrived. Book it into escrow, hold the merchant's share, and queue delivery on commit.

    A second confirmation of the same payment does nothing. An amount or currency that differs from
    the order's holds the order for review and delivers nothing. A success after the payment failed
    (the order was cancelled) is a late payment: delivered if stock is there, else refunded in full.
    """
    assert transaction.get_connection().in_atomic_block
    payment = payment_lock(payment_pk)
    order = order_lock(payment.order_id)
    if not PAYMENT_TRANSITIONS.can(payment.status, PaymentStatus.SUCCEEDED):
        return order
    if payment.status == PaymentStatus.FAILED:
        logger.warning("escrow.payment_succeeded_after_failure", extra={"order": order.pk, "payment": payment.pk})

    if event.amount != payment.amount or event.currency != payment.currency:
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
        )
        ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.HELD_FOR_REVIEW, paid_at=now)
        ledger.transfer(
            transfer_id=f"payment:{payment.pk}",
            debit=clearing,
            credit=suspense,
            amount=event.amount,
            code="payment_mismatch",
            order=order,
            now=now,
        )
        audit_record(
            action=AuditAction.PAYMENT_MISMATCHED,
            subject=order,
            now=now,
            data={"expected": [payment.amount, payment.currency], "received": [event.amount, event.currency]},
        )
        logger.warning("escrow.payment_mismatched", extra={"order": order.pk, "payment": payment.pk})
        return order

    PAYMENT_TRANSITIONS.apply(
        model=Payment,
        pk=payment.pk,
        to=PaymentStatus.SUCCEEDED,
        settled_at=now,
        received_amount=event.amount,
        received_currency=event.currency,
    )
    late = order.status != OrderStatus.AWAITING_PAYMENT
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.PAID, paid_at=now)
    audit_record(
        action=AuditAction.PAYMENT_SUCCEEDED, subject=order, now=now, data={"payment": payment.pk, "late": late}
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

    # The money in, and the merchant's share and the fee held out of escrow, booked in one statement.
    ledger.transfers(
        moves=[paid_in, *_holds(order=order, escrow=escrow, available=available, fees=fees)], order=order, now=now
    )
    # Never raises after the commit: if the broker is down the sweeper delivers (escrow/delivery.py).
    transaction.on_commit(lambda: order_delivery_enqueue(order_pk=order.pk))
    return order


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


def payment_failed(*, payment_pk: int, now: datetime) -> None:
    """The buyer's payment failed at the gateway: cancel the unpaid order and return its keys."""
    assert transaction.get_connection().in_atomic_block
    payment = payment_lock(payment_pk)
    order = order_lock(payment.order_id)
    if payment.status != PaymentStatus.PENDING:
        return
    PAYMENT_TRANSITIONS.apply(model=Payment, pk=payment.pk, to=PaymentStatus.FAILED, settled_at=now)
    if order.status == OrderStatus.AWAITING_PAYMENT:
        ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.CANCELLED)
        shop_services.keys_release(order_pk=order.pk)
    audit_record(action=AuditAction.PAYMENT_FAILED, subject=order, now=now, data={"payment": payment.pk})


def _payment_succeeded_event(*, payment: Payment, event: GatewayEvent, now: datetime) -> None:
    payment_succeeded(payment_pk=payment.pk, event=event, now=now)


def _payment_failed_event(*, payment: Payment, event: GatewayEvent, now: datetime) -> None:
    payment_failed(payment_pk=payment.pk, now=now)


# Gateway event type → its handler, all called alike inside `webhook_receive`'s transaction.
WEBHOOK_HANDLERS: dict[str, Callable[..., object]] = {
    "payment.succeeded": _payment_succeeded_event,
    "payment.failed": _payment_failed_event,
    "refund.succeeded": refunds.refund_succeeded,
}


@transaction.atomic(durable=True)
def order_deliver(*, order_pk: int, now: datetime) -> Order:
    """Hand a paid order its keys. Safe to run twice: only a `paid` order is delivered."""
    order = order_lock(order_pk)
    if order.status != OrderStatus.PAID:
        return order
    sold = shop_services.keys_sell(order_pk=order.pk)
    if sold != order.quantity:  # the reservation holds exactly `quantity` keys; anything else is a bug
        raise RuntimeError(f"Order {order.pk} has {sold} keys to sell, not {order.quantity}.")
    delivered = {"delivered_at": now, "inspection_ends_at": now + timedelta(hours=order.product.inspection_hours)}
    ORDER_TRANSITIONS.apply(model=Order, pk=order.pk, to=OrderStatus.DELIVERED, mirror=order, **delivered)
    audit_record(action=AuditAction.ORDER_DELIVERED, subject=order, now=now, data={"keys": order.quantity})
    shop_services.product_low_stock_check(
        product_pk=order.product_id, product=order.product, now=now
    )  # e-mails after commit
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


@transaction.atomic(durable=True)
def order_keys_reveal(
    *, order: Order, now: datetime, channel: str, ip: str | None, user_agent: str, user: User | None
) -> list[str]:
    """Open the order's keys for its owner, recording who saw them, when and from where.

    At most `RATE_LIMITS["key_reveal"]` per order, from all addresses together: past it this raises
    `RateLimited` and records nothing, so the reveal evidence cannot be flooded.

    It runs under the order's lock, so a refund deciding whether its keys were ever seen (and may go
    back on sale) is never overtaken by a reveal.
    """
    order = order_lock(order.pk)
    if not order.has_keys:
        raise KeysNotDelivered(order.pk)
    rate_limit_check(scope="key_reveal", identity=f"order:{order.pk}", now=now.timestamp())
    KeyReveal.objects.create(
        order=order,
        at=now,
        channel=channel,
        ip=ip,
        user_agent=user_agent[:512],
        user=user if user is not None and user.is_authenticated else None,
    )
    return order_keys_plaintext(order_pk=order.pk)
