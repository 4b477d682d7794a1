"""The buyer's path through the services: place, pay, deliver, confirm; and what must not happen."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from core.transitions import StateError
from escrow import ledger, services
from escrow.ledger_checks import ledger_problems
from escrow.models import AccountKind, KeyReveal, Order, OrderStatus, Transfer
from shop.models import CardKey, CardKeyStatus
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rolling_reserve(settings):
    # The factories' merchants are new, so a rolling reserve would apply; it is tested in test_reserve.py.
    settings.RESERVE_PERCENT = 0


def balances(order):
    merchant = ledger.merchant_account(AccountKind.MERCHANT_AVAILABLE, order.currency, order.merchant_id)
    fees = ledger.platform_account(AccountKind.PLATFORM_FEES, order.currency)
    escrow = ledger.platform_account(AccountKind.ESCROW, order.currency)
    return merchant.credit_balance, fees.credit_balance, escrow.credit_balance, merchant.credits_pending


def test_place_reserves_keys_and_sends_the_link(run_on_commit):
    product = factories.product_create(stock=3, price=1999)
    with run_on_commit():
        placed = factories.order_place(product=product, quantity=2, email="guest@example.com")
    order = placed.order
    assert order.status == OrderStatus.AWAITING_PAYMENT
    assert order.amount == 3998
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.RESERVED).count() == 2
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 1
    # The link is mailed by the beat once the order is a minute old and still has no keys (issue 9).
    assert mail.outbox == []
    assert services.orders_link_email_due(now=order.created_at + timedelta(minutes=2)) == 1
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["guest@example.com"]
    assert f"/orders/{order.pk}/t/" in mail.outbox[0].body
    assert placed.access_token not in order.access_token_hash


@pytest.mark.parametrize(
    ("quantity", "email", "code"),
    [
        (0, "a@example.com", "bad_quantity"),
        (11, "a@example.com", "bad_quantity"),
        (1, "not-an-email", "bad_email"),
        (4, "a@example.com", "out_of_stock"),
    ],
)
def test_bad_checkout_changes_nothing(quantity, email, code):
    product = factories.product_create(stock=3)
    with pytest.raises(services.CheckoutError) as error:
        factories.order_place(product=product, quantity=quantity, email=email)
    assert error.value.code == code
    assert Order.objects.count() == 0
    assert CardKey.objects.filter(status=CardKeyStatus.AVAILABLE).count() == 3


def test_pay_deliver_confirm_moves_exactly_the_share_and_fee(run_on_commit):
    product = factories.product_create(stock=2, price=10001)  # 5% of 10001 = 500.05 → fee 500
    placed = factories.order_place(product=product)
    with run_on_commit():
        response = factories.pay(placed.order)
    assert response.status_code == 200
    order = Order.objects.get(pk=placed.order.pk)
    assert order.status == OrderStatus.DELIVERED
    assert order.inspection_ends_at == order.delivered_at + timedelta(hours=24)
    assert CardKey.objects.get(order=order).status == CardKeyStatus.SOLD
    assert balances(order) == (0, 0, 10001, 9501)

    services.order_confirm_receipt(order=order, now=timezone.now())
    order.refresh_from_db()
    assert order.status == OrderStatus.COMPLETED
    assert balances(order) == (9501, 500, 0, 0)
    assert ledger_problems() == []

    transfers = Transfer.objects.count()
    with pytest.raises(StateError):
        services.order_confirm_receipt(order=order, now=timezone.now())
    assert Transfer.objects.count() == transfers
    assert balances(order) == (9501, 500, 0, 0)


def test_fee_rounds_half_up_and_merchant_rate_applies(run_on_commit):
    merchant = factories.merchant_create(fee_percent="2.50")
    product = factories.product_create(merchant=merchant, stock=1, price=1020)  # 2.5% of 1020 = 25.5 → 26
    placed = factories.order_place(product=product)
    with run_on_commit():
        factories.pay(placed.order)
    order = Order.objects.get(pk=placed.order.pk)
    services.order_confirm_receipt(order=order, now=timezone.now())
    assert balances(order)[:2] == (994, 26)


def test_confirm_before_delivery_is_refused():
    placed = factories.order_place(product=factories.product_create(stock=1))
    with pytest.raises(StateError):
        services.order_confirm_receipt(order=placed.order, now=timezone.now())
    assert Transfer.objects.count() == 0


def test_keys_are_revealed_only_when_delivered_and_each_reveal_is_recorded(run_on_commit):
    placed = factories.order_place(product=factories.product_create(stock=1))
    with pytest.raises(services.KeysNotDelivered):
        services.order_keys_reveal(
            order=placed.order, now=timezone.now(), channel="api", ip=None, user_agent="", user=None
        )
    assert KeyReveal.objects.count() == 0
    with run_on_commit():
        factories.pay(placed.order)
    order = Order.objects.get(pk=placed.order.pk)
    keys = services.order_keys_reveal(
        order=order, now=timezone.now(), channel="api", ip="10.0.0.9", user_agent="UA", user=None
    )
    assert len(keys) == 1 and keys[0].startswith("KEY-")
    reveal = KeyReveal.objects.get()
    assert (reveal.order_id, reveal.ip, reveal.user_agent, reveal.channel) == (order.pk, "10.0.0.9", "UA", "api")


def test_expiry_returns_keys_to_stock_and_leaves_fresh_orders_alone():
    product = factories.product_create(stock=2)
    old = factories.order_place(product=product).order
    fresh = factories.order_place(product=product).order
    Order.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.orders_expire_due(now=timezone.now()) == 1
    assert Order.objects.get(pk=old.pk).status == OrderStatus.EXPIRED
    assert Order.objects.get(pk=fresh.pk).status == OrderStatus.AWAITING_PAYMENT
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 1
    assert services.orders_expire_due(now=timezone.now()) == 0


def test_late_payment_delivers_when_stock_is_there(run_on_commit):
    product = factories.product_create(stock=1)
    order = factories.order_place(product=product).order
    services.orders_expire_due(now=order.expires_at)
    with run_on_commit():
        assert factories.pay(order).status_code == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert CardKey.objects.get(product=product).order_id == order.pk
    assert ledger_problems() == []


def test_late_payment_without_stock_is_refunded_in_full(run_on_commit):
    product = factories.product_create(stock=1)
    late = factories.order_place(product=product).order
    services.orders_expire_due(now=late.expires_at)
    other = factories.order_place(product=product).order  # takes the only key
    with run_on_commit():
        assert factories.pay(late).status_code == 200
    late.refresh_from_db()
    assert late.status == OrderStatus.REFUNDED
    assert CardKey.objects.get(product=product).order_id == other.pk
    escrow = ledger.platform_account(AccountKind.ESCROW, "CNY")
    assert escrow.credit_balance == 0
    assert Transfer.objects.filter(order=late, code="refund").get().amount == late.amount
    assert ledger_problems() == []


def test_failed_payment_cancels_and_returns_stock(run_on_commit):
    product = factories.product_create(stock=1)
    order = factories.order_place(product=product).order
    with run_on_commit():
        assert factories.pay(order, event_type="payment.failed").status_code == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
    assert CardKey.objects.get(product=product).status == CardKeyStatus.AVAILABLE
    assert Transfer.objects.count() == 0


def test_delivery_task_run_twice_delivers_once(run_on_commit):
    placed = factories.order_place(product=factories.product_create(stock=1))
    with run_on_commit():
        factories.pay(placed.order)
    first = Order.objects.get(pk=placed.order.pk)
    again = services.order_deliver(order_pk=first.pk, now=timezone.now() + timedelta(hours=1))
    assert again.delivered_at == first.delivered_at


def test_a_sale_below_the_threshold_mails_the_merchant_once(run_on_commit):
    from django.core import mail

    product = factories.product_create(stock=4, low_stock_threshold=3)
    mail.outbox.clear()
    for _ in range(3):
        with run_on_commit():
            placed = factories.order_place(product=product)
        with run_on_commit():
            factories.pay(placed.order)
    low_stock = [m for m in mail.outbox if "Low stock" in m.subject]
    assert len(low_stock) == 1
    assert low_stock[0].to == [product.merchant.user.email]
