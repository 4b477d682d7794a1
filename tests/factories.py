"""Small factories that build state through the real services."""

import itertools
import time

from django.test import Client
from django.utils import timezone

from accounts.models import User
from core.money import to_major
from escrow import services as escrow_services
from escrow.gateways.sandbox.gateway import SIGNATURE_HEADER, event_body, signature_header
from escrow.models import Order, Payment
from shop import services as shop_services
from shop.models import Merchant, MerchantStatus, Product

_counter = itertools.count(1)


def user_create(*, username: str | None = None, password: str = "pw-for-tests-1", **fields) -> User:
    """A user whose e-mail counts as verified (as accounts made by staff or the demo data do); pass
    `email_verified_at=None` for a fresh self-service sign-up's state."""
    username = username or f"user{next(_counter)}"
    fields.setdefault("email", f"{username}@example.com")
    fields.setdefault("email_verified_at", timezone.now())
    return User.objects.create_user(username=username, password=password, **fields)


def merchant_create(*, name: str = "Key Store", fee_percent=None) -> Merchant:
    merchant = shop_services.merchant_create(
        user=user_create(), name=name, now=timezone.now(), status=MerchantStatus.APPROVED
    )
    if fee_percent is not None:
        Merchant.objects.filter(pk=merchant.pk).update(fee_percent=fee_percent)
        merchant.refresh_from_db()
    return merchant


def product_create(
    *, merchant: Merchant | None = None, stock: int = 5, price: int = 10000, currency: str = "CNY", **fields
) -> Product:
    merchant = merchant or merchant_create()
    product = shop_services.product_create(
        merchant=merchant,
        title=fields.pop("title", f"Product {next(_counter)}"),
        price=price,
        currency=currency,
        now=timezone.now(),
        **fields,
    )
    if stock:
        keys = [f"KEY-{product.pk}-{i:06d}-{next(_counter)}" for i in range(stock)]
        shop_services.keys_import_batch(product=product, keys=keys, now=timezone.now())
    return product


def order_place(*, product: Product, quantity: int = 1, email: str = "buyer@example.com", buyer=None):
    return escrow_services.order_place(
        product_pk=product.pk, quantity=quantity, email=email, buyer=buyer, now=timezone.now()
    )


def signed_webhook(
    *,
    payment: Payment,
    event_type: str = "payment.succeeded",
    amount: str | None = None,
    currency: str | None = None,
    event_id: str | None = None,
    timestamp: int | None = None,
    secret: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = event_body(
        event_type=event_type,
        payment_id=payment.payment_id,
        amount=amount if amount is not None else to_major(payment.amount, payment.currency),
        currency=currency or payment.currency,
        event_id=event_id,
    )
    header = signature_header(body=body, timestamp=timestamp or int(time.time()), secret=secret)
    return body, {SIGNATURE_HEADER: header}


def webhook_post(client: Client, body: bytes, headers: dict[str, str]):
    return client.post(
        "/payments/sandbox/webhook/",
        data=body,
        content_type="application/json",
        headers=headers,
    )


def pay(order: Order, client: Client | None = None, **kwargs):
    """Send the order's payment.succeeded webhook, signed, through the HTTP endpoint."""
    payment = order.payments.get()
    body, headers = signed_webhook(payment=payment, **kwargs)
    return webhook_post(client or Client(), body, headers)


# --- escrow money lifecycle (issue 4) -----------------------------------------------------------------


def order_delivered(*, product: Product, quantity: int = 1, email: str = "buyer@example.com") -> Order:
    """An order placed, paid by signed webhook and delivered (callers wrap it in `run_on_commit()`)."""
    placed = order_place(product=product, quantity=quantity, email=email)
    response = pay(placed.order)
    assert response.status_code == 200, response.content
    return placed.order


def totp_device_create(*, user: User):
    """A confirmed TOTP device for `user` (as if enrolled through the QR page)."""
    from accounts.services import totp_device_provision_unchecked

    return totp_device_provision_unchecked(user=user, now=timezone.now())


def totp_code(device, *, offset_steps: int = 0) -> str:
    """The device's code for the current time step (plus `offset_steps`)."""
    from django_otp.oath import TOTP

    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + offset_steps * device.step
    return f"{totp.token():0{device.digits}d}"


def login_verified(client: Client, user: User, *, device=None):
    """Sign `user` in on `client` with a session that passed the second factor (by `device`, default
    their TOTP device, created confirmed if missing), as the verify page leaves it: merchants and
    staff need one. Returns the device, for codes the test may still need."""
    from django_otp import DEVICE_ID_SESSION_KEY

    from accounts.services import totp_device_confirmed

    device = device or totp_device_confirmed(user) or totp_device_create(user=user)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device


def payout_account_create(*, merchant: Merchant):
    """A saved payout account for `merchant`, added through the withdrawal service (without the fresh
    second factor a request needs: tests of that gate call `payout_account_add`)."""
    from escrow import withdrawals

    return withdrawals.payout_account_add_unchecked(
        merchant=merchant,
        label="Main",
        holder_name="Li Lei",
        account_number="6222000011112222",
        provider="ICBC",
        actor=merchant.user,
        now=timezone.now(),
    )
