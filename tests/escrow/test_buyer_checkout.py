"""Issue 14, buyers 2-5: wholesale tiers and coupons priced on the server, a coupon raced past its limit,
the order lookup, paying again after a failed payment, and the buyer's e-mails in their language."""

import re
import secrets
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEntry
from escrow import services
from escrow.ledger_checks import ledger_problems
from escrow.models import Order, OrderStatus, Payment, PaymentStatus, Refund
from escrow.notifications import orders_link_email_due
from escrow.refunds import order_refund
from shop import services as shop_services
from shop.models import CardKey, CardKeyStatus, Coupon, CouponKind
from tests import factories
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db


@pytest.fixture
def merchant():
    return factories.merchant_create(name="Coupon Shop")


@pytest.fixture
def client_for(client):
    def sign_in(merchant):
        factories.login_verified(client, merchant.user)
        return client

    return sign_in


def _coupon(product, *, code="SAVE10", kind=CouponKind.PERCENT, value=10, whole_shop=False, **fields) -> Coupon:
    return shop_services.coupon_create(
        merchant=product.merchant,
        code=code,
        kind=kind,
        value=value,
        currency=fields.pop("currency", product.currency if kind == CouponKind.FIXED else ""),
        product=None if whole_shop else product,
        actor=None,
        now=fields.pop("now", timezone.now()),
        **fields,
    )


def _checkout(client, product, **data):
    return client.post(f"/products/{product.pk}/checkout/", {"email": "g@example.com", "quantity": 1, **data})


# --- tiers and coupons ----------------------------------------------------------------------------------


def test_the_tier_for_the_quantity_and_the_coupon_price_the_order_and_a_tampered_total_is_ignored():
    product = factories.product_create(stock=20, price=1000, price_tiers=[[10, 900], [15, 850]])
    _coupon(product, code="save10", value=10)
    response = _checkout(
        Client(), product, quantity=10, coupon=" Save10 ", total="0.01", amount="1", unit_price="1", price="1"
    )
    assert response.status_code == 302
    order = Order.objects.get()
    # 10 at the 10+ tier (¥9.00) = ¥90.00, less 10 % = ¥81.00; nothing the form sent about money was read.
    assert (order.unit_price, order.discount, order.amount) == (900, 900, 8100)
    assert order.coupon.code == "SAVE10" and order.payments.get().amount == 8100
    assert Coupon.objects.get().uses == 1
    assert [services.order_max_quantity(product), factories.order_place(product=product, quantity=4).order.amount] == [
        10,
        4000,
    ]


def test_tier_boundaries_and_a_fixed_coupon_never_make_an_order_free():
    from shop.pricing import price_for

    product = factories.product_create(stock=0, price=1000, price_tiers=[[10, 900], [50, 800]])
    assert [price_for(product, quantity=q).unit_price for q in (1, 9, 10, 49, 50, 200)] == [
        1000,
        1000,
        900,
        900,
        800,
        800,
    ]
    big = _coupon(product, code="BIG", kind=CouponKind.FIXED, value=50_000)
    assert price_for(product, quantity=2, coupon=big).total == 1  # never below one minor unit
    half = _coupon(product, code="HALF", value=50)
    assert price_for(product, quantity=3, coupon=half).discount == 1500  # 50 % of 3000
    odd = _coupon(product, code="ODD", value=33)
    assert price_for(product, quantity=1, coupon=odd).discount == 330  # 33 % of 1000
    assert price_for(factories.product_create(stock=0, price=5), quantity=1, coupon=None).total == 5


def test_the_ledger_splits_what_was_paid_after_the_discount(run_on_commit):
    product = factories.product_create(stock=5, price=10000)
    _coupon(product, code="TWENTY", value=20)
    with run_on_commit():
        placed = services.order_place(
            product_pk=product.pk,
            quantity=1,
            email="b@example.com",
            buyer=None,
            now=timezone.now(),
            coupon_code="twenty",
        )
        factories.pay(placed.order)
    order = Order.objects.get(pk=placed.order.pk)
    assert order.status == OrderStatus.DELIVERED and order.amount == 8000
    services.order_confirm_receipt(order=order, now=timezone.now())
    assert ledger_problems() == []


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        (
            lambda p: _coupon(
                p, code="OLD", now=timezone.now() - timedelta(days=2), expires_at=timezone.now() - timedelta(days=1)
            ),
            "coupon_expired",
            "expired",
        ),
        (lambda p: _coupon(p, code="OLD", max_uses=1) and Coupon.objects.update(uses=1), "coupon_used_up", "used up"),
        (lambda p: _coupon(factories.product_create(stock=1), code="OLD"), "coupon_unknown", "not valid"),
        (
            lambda p: shop_services.coupon_deactivate(coupon=_coupon(p, code="OLD"), actor=None, now=timezone.now()),
            "coupon_unknown",
            "not valid",
        ),
        (
            lambda p: _coupon(p, code="OLD", kind=CouponKind.FIXED, value=100, currency="USD"),
            "coupon_unknown",
            "not valid",
        ),
    ],
    ids=["expired", "used-up", "another-product", "switched-off", "another-currency"],
)
def test_a_refused_coupon_places_nothing_and_says_why(setup, code, message):
    product = factories.product_create(stock=3)
    if "expired" in message:  # coupon_create refuses a past expiry: make it valid, then let time pass
        coupon = _coupon(product, code="OLD", expires_at=timezone.now() + timedelta(minutes=1))
        Coupon.objects.filter(pk=coupon.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    else:
        setup(product)
    uses = list(Coupon.objects.values_list("uses", flat=True))
    with pytest.raises(services.CheckoutError) as refused:
        services.order_place(
            product_pk=product.pk, quantity=1, email="b@example.com", buyer=None, now=timezone.now(), coupon_code="old"
        )
    assert refused.value.code == code
    page = _checkout(Client(), product, coupon="OLD")
    assert page.status_code == 400 and message in page.text
    assert Order.objects.count() == 0 and list(Coupon.objects.values_list("uses", flat=True)) == uses
    assert CardKey.objects.filter(status=CardKeyStatus.RESERVED).count() == 0


def test_a_shop_wide_coupon_works_on_every_product_of_its_merchant_only():
    product = factories.product_create(stock=2, price=2000)
    sibling = factories.product_create(merchant=product.merchant, stock=2, price=3000)
    _coupon(product, code="ALL5", kind=CouponKind.FIXED, value=500, whole_shop=True)
    for item, expected in ((product, 1500), (sibling, 2500)):
        placed = services.order_place(
            product_pk=item.pk, quantity=1, email="b@example.com", buyer=None, now=timezone.now(), coupon_code="all5"
        )
        assert placed.order.amount == expected
    with pytest.raises(services.CheckoutError):
        services.order_place(
            product_pk=factories.product_create(stock=1).pk,
            quantity=1,
            email="b@example.com",
            buyer=None,
            now=timezone.now(),
            coupon_code="ALL5",
        )


def test_merchants_make_and_switch_off_coupons_in_their_area(client_for, merchant):
    product = factories.product_create(merchant=merchant, stock=1)
    other = factories.product_create(stock=1)
    client = client_for(merchant)
    made = client.post(
        "/merchant/coupons/",
        {"code": "spring", "kind": "fixed", "value": "5.50", "currency": "CNY", "product": product.pk, "max_uses": 3},
    )
    assert made.status_code == 302
    coupon = Coupon.objects.get(merchant=merchant)
    assert (coupon.code, coupon.value, coupon.max_uses, coupon.product_id) == ("SPRING", 550, 3, product.pk)
    assert AuditEntry.objects.filter(action="coupon.created").count() == 1
    again = client.post("/merchant/coupons/", {"code": "SPRING", "kind": "percent", "value": "10"})
    assert "already have a coupon" in again.text
    foreign = client.post("/merchant/coupons/", {"code": "X1", "kind": "percent", "value": "10", "product": other.pk})
    assert foreign.status_code == 200 and Coupon.objects.count() == 1  # another merchant's product is no choice
    assert "SPRING" in client.get("/merchant/coupons/").text
    assert client.post(f"/merchant/coupons/{coupon.pk}/deactivate/").status_code == 302
    assert not Coupon.objects.get().is_active
    stranger = factories.merchant_create()
    assert client_for(stranger).post(f"/merchant/coupons/{coupon.pk}/deactivate/").status_code == 404


# --- the race ------------------------------------------------------------------------------------------


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_coupon_raced_by_many_checkouts_is_used_exactly_up_to_its_limit():
    from tests.escrow.test_concurrency import run_in_threads

    product = factories.product_create(stock=20, price=1000)
    _coupon(product, code="FIRST3", value=50, max_uses=3)

    def checkout(index: int):
        return services.order_place(
            product_pk=product.pk,
            quantity=1,
            email=f"racer{index}@example.com",
            buyer=None,
            now=timezone.now(),
            coupon_code="FIRST3",
        )

    results = run_in_threads(8, checkout)
    placed = [r for r in results if isinstance(r, services.PlacedOrder)]
    refused = [r for r in results if isinstance(r, services.CheckoutError)]
    assert len(placed) == 3 and len(refused) == 5, results
    assert {r.code for r in refused} == {"coupon_used_up"}
    assert Coupon.objects.get().uses == 3
    assert Order.objects.count() == 3 and set(Order.objects.values_list("amount", flat=True)) == {500}
    assert CardKey.objects.filter(status=CardKeyStatus.RESERVED).count() == 3  # the losers reserved nothing


# --- order lookup ---------------------------------------------------------------------------------------


def test_lookup_mails_a_fresh_link_to_the_owner_only_and_says_the_same_for_unknown_orders(run_on_commit):
    order = factories.order_place(product=factories.product_create(stock=1), email="Owner@Example.com").order
    mail.outbox.clear()
    client = Client()
    with run_on_commit():
        found = client.post("/orders/lookup/", {"email": "owner@example.com", "order_number": order.pk})
        wrong_email = client.post("/orders/lookup/", {"email": "thief@example.com", "order_number": order.pk})
        no_order = client.post("/orders/lookup/", {"email": "owner@example.com", "order_number": order.pk + 100})

    def said(response) -> str:
        text = response.text.replace(response.wsgi_request.POST["email"], "<email>")
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", text)

    assert found.status_code == wrong_email.status_code == no_order.status_code == 200
    assert said(found) == said(wrong_email) == said(no_order)  # nothing tells them apart
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["Owner@Example.com"] and sent.extra_headers["X-Shop-Event"] == "order.lookup"
    link = next(word for word in sent.body.split() if f"/orders/{order.pk}/t/" in word)
    assert link not in found.text  # the page never shows it
    path = link.removeprefix("http://127.0.0.1:8000")
    assert Client().get(path).status_code == 200  # the signed link opens the order
    assert Client().get(path.replace(f"/orders/{order.pk}/", f"/orders/{order.pk + 1}/")).status_code == 404
    assert Client().get(path[:-3] + "xx/").status_code == 404  # a forged signature opens nothing
    html = sent.alternatives[0]
    assert html[1] == "text/html" and link in html[0]


def test_lookup_is_rate_limited(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "order_lookup": "2/min"}
    client = Client(REMOTE_ADDR=f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}")
    codes = [
        client.post("/orders/lookup/", {"email": f"a{i}@example.com", "order_number": 1}).status_code for i in range(3)
    ]
    assert codes == [200, 200, 429]


# --- pay again ------------------------------------------------------------------------------------------


def test_a_failed_payment_can_be_paid_again_while_the_window_holds(run_on_commit):
    product = factories.product_create(stock=2, price=1000)
    placed = factories.order_place(product=product)
    order = placed.order
    assert factories.pay(order, event_type="payment.failed").status_code == 200
    page_url = f"/orders/{order.pk}/t/{placed.access_token}/"
    page = Client().get(page_url)
    assert 'data-testid="pay-again"' in page.text
    response = Client().post(page_url + "pay-again/")
    assert response.status_code == 302 and "/payments/sandbox/" in response.url
    order.refresh_from_db()
    assert order.status == OrderStatus.AWAITING_PAYMENT
    assert CardKey.objects.filter(order=order, status=CardKeyStatus.RESERVED).count() == 1
    new = order.payments.get(status=PaymentStatus.PENDING)
    body, headers = factories.signed_webhook(payment=new)
    with run_on_commit():
        assert factories.webhook_post(Client(), body, headers).status_code == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    # The first, failed payment succeeding late now: the order is paid, so that money goes back in full.
    old = order.payments.get(status=PaymentStatus.FAILED)
    body, headers = factories.signed_webhook(payment=old, event_id="late-success")
    with run_on_commit():
        assert factories.webhook_post(Client(), body, headers).status_code == 200
    assert Refund.objects.get(payment=old).amount == 1000
    assert Order.objects.get(pk=order.pk).status == OrderStatus.DELIVERED
    assert ledger_problems() == []


def test_pay_again_after_the_window_offers_a_fresh_checkout_and_changes_nothing():
    product = factories.product_create(stock=2)
    placed = factories.order_place(product=product, quantity=2)
    factories.pay(placed.order, event_type="payment.failed")
    Order.objects.filter(pk=placed.order.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    url = f"/orders/{placed.order.pk}/t/{placed.access_token}/"
    response = Client().post(url + "pay-again/", follow=True)
    assert "Please order again" in response.text
    assert f"/products/{product.pk}/?quantity=2" in response.text  # the fresh checkout, filled in
    assert Order.objects.get().status == OrderStatus.CANCELLED and Payment.objects.count() == 1
    with pytest.raises(services.PayAgainError) as refused:
        services.order_pay_again(order_pk=placed.order.pk, now=timezone.now())
    assert refused.value.code == "window_passed"


def test_pay_again_refuses_a_paid_order_and_someone_elses():
    placed = factories.order_place(product=factories.product_create(stock=1))
    with pytest.raises(services.PayAgainError) as refused:
        services.order_pay_again(order_pk=placed.order.pk, now=timezone.now())
    assert refused.value.code == "bad_state"
    assert Client().post(f"/orders/{placed.order.pk}/pay-again/").status_code == 404


def test_an_unpaid_order_shows_its_countdown_and_a_link_back_to_pay():
    placed = factories.order_place(product=factories.product_create(stock=1))
    page = Client().get(f"/orders/{placed.order.pk}/t/{placed.access_token}/")
    assert 'data-testid="pay-countdown"' in page.text and 'data-testid="pay-link"' in page.text
    assert f"/payments/sandbox/pay/{placed.payment.payment_id}/" in page.text


# --- the buyer's e-mails and the timeline ----------------------------------------------------------------


def test_every_buyer_email_is_in_the_checkout_language_with_html_and_the_link(run_on_commit):
    product = factories.product_create(stock=2, price=1000, title="Steam 礼品卡")
    mail.outbox.clear()
    with run_on_commit():
        response = Client(headers={"accept-language": "zh-hans"}).post(
            f"/products/{product.pk}/checkout/", {"email": "zh@example.com", "quantity": 1}
        )
    order = Order.objects.get()
    assert response.status_code == 302 and order.language == "zh-hans"
    # Still unpaid a minute later: the beat mails the link (a buyer who pays sooner gets it with the keys).
    assert orders_link_email_due(now=timezone.now() + timedelta(minutes=2)) == 1
    with run_on_commit():
        factories.pay(order)
    order.refresh_from_db()
    with run_on_commit():
        order_refund(order_pk=order.pk, now=timezone.now(), note="sorry")
    buyer_mail = [m for m in mail.outbox if m.to == ["zh@example.com"]]
    events = [m.extra_headers["X-Shop-Event"] for m in buyer_mail]
    assert events == ["order.placed", "order.delivered", "order.refunded"]
    for sent in buyer_mail:
        assert f"/orders/{order.pk}/t/" in sent.body
        assert sent.alternatives and sent.alternatives[0][1] == "text/html"
        assert f"/orders/{order.pk}/t/" in sent.alternatives[0][0]
    assert all("订单" in sent.subject for sent in buyer_mail) and "退款" in buyer_mail[2].subject


def test_the_timeline_shows_each_step_with_its_date(run_on_commit):
    product = factories.product_create(stock=1)
    with run_on_commit():
        placed = factories.order_place(product=product)
        factories.pay(placed.order)
    url = f"/orders/{placed.order.pk}/t/{placed.access_token}/"
    page = Client().get(url)
    timeline = page.text.split('data-testid="timeline"')[1].split("</ol>")[0]
    assert [label in timeline for label in ("Placed", "Paid", "Delivered", "Accepted", "Released")] == [True] * 5
    assert timeline.count("<time") == 3
    assert 'data-testid="release-countdown"' in page.text and 'data-confirm="' in page.text
    services.order_confirm_receipt(order=Order.objects.get(), now=timezone.now())
    timeline = Client().get(url).text.split('data-testid="timeline"')[1].split("</ol>")[0]
    assert "You confirmed receipt" in timeline and timeline.count("<time") == 5


def test_merchants_set_wholesale_tiers_in_the_product_form_and_bad_rows_are_refused(client_for, merchant):
    client = client_for(merchant)
    fields = {"title": "Steam", "price": "10.00", "currency": "CNY", "inspection_hours": 24}
    fields |= {"max_per_order": 10, "low_stock_threshold": 1, "description": "", "category": ""}
    made = client.post("/merchant/products/new/", {**fields, "price_tiers": "10 9.00\n20=8.50\n"})
    assert made.status_code == 302
    product = merchant.products.get()
    assert product.price_tiers == [[10, 900], [20, 850]]
    assert "10 9.00" in client.get(f"/merchant/products/{product.pk}/edit/").text
    for bad in ("10 11.00", "1 9.00", "20 8.00\n10 9.00", "ten nine"):
        refused = client.post(f"/merchant/products/{product.pk}/edit/", {**fields, "price_tiers": bad})
        assert refused.status_code == 200, bad
        assert merchant.products.get().price_tiers == [[10, 900], [20, 850]]
    with pytest.raises(shop_services.ShopError):  # lowering the price under a tier is refused too
        shop_services.product_update(product=product, actor=None, now=timezone.now(), price=800)
    assert merchant.products.get().price == 1000
