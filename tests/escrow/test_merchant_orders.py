"""The merchant's orders (list, filters, order page, scoping), the paid-order notification, the statement
in words and the dashboard's charts."""

import re

import pytest
from django.core import mail
from django.utils import timezone, translation

from accounts.models import Notification
from core.mail import EVENT_HEADER
from escrow import services
from escrow.dashboard import currencies_of, merchant_series
from escrow.models import Transfer
from escrow.selectors import statement_words
from shop import services as shop_services
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_reserve(settings):
    settings.RESERVE_PERCENT = 0


def sold(run_on_commit, *, merchant=None, email="buyer@example.com", quantity=1):
    product = factories.product_create(stock=5, merchant=merchant)
    with run_on_commit():
        return factories.order_delivered(product=product, quantity=quantity, email=email)


def test_the_list_filters_and_searches_only_the_merchants_own_orders(client, run_on_commit):
    first = sold(run_on_commit, email="ann@example.com")
    merchant = first.merchant
    second = sold(run_on_commit, merchant=merchant, email="bob@example.com")
    someone_else = sold(run_on_commit, merchant=factories.merchant_create(name="Other"))
    factories.login_verified(client, merchant.user)

    page = client.get("/merchant/orders/").content.decode()
    assert f'data-order="{first.pk}"' in page and f'data-order="{second.pk}"' in page
    assert f'data-order="{someone_else.pk}"' not in page

    by_mail = client.get("/merchant/orders/", {"q": "BOB@example.com"}).content.decode()
    assert f'data-order="{second.pk}"' in by_mail and f'data-order="{first.pk}"' not in by_mail
    by_number = client.get("/merchant/orders/", {"q": f"#{first.pk}"}).content.decode()
    assert f'data-order="{first.pk}"' in by_number and f'data-order="{second.pk}"' not in by_number
    by_status = client.get("/merchant/orders/", {"status": "completed"}).content.decode()
    assert 'data-order="' not in by_status
    by_product = client.get("/merchant/orders/", {"product": first.product_id}).content.decode()
    assert f'data-order="{first.pk}"' in by_product and f'data-order="{second.pk}"' not in by_product
    # Searching for another merchant's order number finds nothing.
    assert 'data-order="' not in client.get("/merchant/orders/", {"q": str(someone_else.pk)}).content.decode()
    assert client.get("/merchant/orders/", {"status": "nonsense"}).status_code == 400


def test_the_order_page_shows_payment_reveals_and_links_the_refund_page(client, run_on_commit):
    order = sold(run_on_commit)
    services.order_keys_reveal(
        order=order, user=None, ip="203.0.113.7", user_agent="PhoneBrowser/1", channel="page", now=timezone.now()
    )
    factories.login_verified(client, order.merchant.user)
    page = client.get(f"/merchant/orders/{order.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'href="/merchant/money/orders/{order.pk}/refund/"' in html
    assert order.payments.get().payment_id in html
    assert 'data-testid="delivered-at"' in html
    assert "203.0.113.7" in html and "PhoneBrowser/1" in html

    other = factories.merchant_create(name="Other")
    factories.login_verified(client, other.user)
    assert client.get(f"/merchant/orders/{order.pk}/").status_code == 404
    assert client.get("/merchant/orders/999999/").status_code == 404


def test_a_paid_order_tells_the_merchant_once_by_mail_and_inbox(run_on_commit):
    from escrow.notifications import order_paid_notify

    order = sold(run_on_commit)
    user = order.merchant.user
    sent = [m for m in mail.outbox if m.extra_headers.get(EVENT_HEADER) == "order.paid"]
    (message,) = sent
    assert message.to == [user.email] and f"/merchant/orders/{order.pk}/" in message.body
    (line,) = Notification.objects.filter(user=user, event="order.paid")
    assert line.url == f"/merchant/orders/{order.pk}/" and line.read_at is None
    # A retried task sends nothing more.
    assert order_paid_notify(order_pk=order.pk) is False
    assert len([m for m in mail.outbox if m.extra_headers.get(EVENT_HEADER) == "order.paid"]) == 1


def test_the_notification_can_be_switched_off_in_settings(client, run_on_commit):
    merchant = factories.merchant_create()
    factories.login_verified(client, merchant.user)
    assert client.get("/merchant/settings/").status_code == 200
    response = client.post("/merchant/settings/", {"contact": "qq 123"})  # the box unticked
    assert response.status_code == 302
    merchant.refresh_from_db()
    assert merchant.notify_paid_orders is False and merchant.contact == "qq 123"
    sold(run_on_commit, merchant=merchant)
    assert not Notification.objects.filter(user=merchant.user, event="order.paid").exists()
    assert not [m for m in mail.outbox if m.extra_headers.get(EVENT_HEADER) == "order.paid"]


def test_the_notification_is_in_the_merchants_language(run_on_commit):
    merchant = factories.merchant_create()
    merchant.user.language = "zh-hans"
    merchant.user.save(update_fields=["language"])
    order = sold(run_on_commit, merchant=merchant)
    line = Notification.objects.get(user=merchant.user, event="order.paid")
    assert line.text.startswith("新的已付款订单") and str(order.pk) in line.text


def test_the_statement_says_what_happened_with_the_fee_in_both_languages(client, run_on_commit):
    order = sold(run_on_commit)
    services.order_confirm_receipt(order=order, now=timezone.now())
    factories.login_verified(client, order.merchant.user)
    html = client.get("/merchant/money/").content.decode()
    assert f"Order #{order.pk} released: ¥95.00 CNY after ¥5.00 CNY fee" in html
    assert f"Order #{order.pk} paid: ¥95.00 CNY held in escrow for you (after a ¥5.00 CNY fee)" in html
    assert "share:post" not in html and "Pending (share)" not in html
    assert "Available to withdraw" in html
    post = Transfer.objects.get(transfer_id=f"order:{order.pk}:share:post")
    with translation.override("zh-hans"):
        words = statement_words(post, fee=500)
    assert words == f"订单 #{order.pk} 已放款：¥95.00 CNY（已扣除 ¥5.00 CNY 手续费）"  # noqa: RUF001
    zh = client.get("/merchant/money/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "可提现" in zh and "可售" not in zh


def test_the_dashboard_draws_the_days_series_as_svg(client, run_on_commit):
    order = sold(run_on_commit, quantity=2)
    merchant = order.merchant
    series = merchant_series(merchant=merchant, days=7, currency="CNY")
    assert len(series.days) == 7 and series.sales[-1] == 1
    assert series.gross[-1] == order.amount and series.fees[-1] == 1000 and series.net[-1] == order.amount - 1000
    factories.login_verified(client, merchant.user)
    for days in (7, 30, 90):
        html = client.get("/merchant/", {"days": days}).content.decode()
        points = re.findall(r'<polyline class="series line-1" points="([^"]+)"', html)
        assert points and len(points[0].split()) == days
    assert 'data-testid="total-sales">1<' in html
    assert f'href="/merchant/orders/{order.pk}/"' in html


def test_the_dashboard_names_each_currency_once(client, run_on_commit):
    first = sold(run_on_commit)
    merchant = first.merchant
    sold(run_on_commit, merchant=merchant)
    sold(run_on_commit, merchant=merchant)
    assert currencies_of(merchant=merchant) == ["CNY"]  # three orders, one currency
    usd = factories.product_create(merchant=merchant, currency="USD", price=500)
    with run_on_commit():
        factories.order_delivered(product=usd)
    assert currencies_of(merchant=merchant) == ["CNY", "USD"]
    factories.login_verified(client, merchant.user)
    html = client.get("/merchant/").content.decode()
    assert re.findall(r'currency=(\w+)" class="button[^"]*">\1</a>', html) == ["CNY", "USD"]


def test_low_stock_is_flagged_on_the_dashboard(client):
    merchant = factories.merchant_create()
    product = factories.product_create(merchant=merchant, stock=2)
    shop_services.product_update(product=product, actor=None, now=timezone.now(), low_stock_threshold=5)
    factories.login_verified(client, merchant.user)
    html = client.get("/merchant/").content.decode()
    assert "1 product is running low." in html
