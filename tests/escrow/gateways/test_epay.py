"""易支付 (epay): the signed submit URL, and the notify verified first, deduplicated, amounts compared."""

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from escrow import refunds
from escrow.gateways.epay.gateway import sign
from escrow.ledger_checks import ledger_problems
from escrow.models import Order, OrderStatus, PaymentStatus, Refund, RefundStatus, Transfer, WebhookEvent
from tests import factories
from tests.escrow.gateways.conftest import EPAY_KEY, place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("real_gateways")]

NOTIFY = "/payments/epay/notify/"


def notify_params(payment, *, money: str | None = None, trade_no: str = "2026113012000001", key: str = EPAY_KEY):
    params = {
        "pid": "1001",
        "trade_no": trade_no,
        "out_trade_no": payment.payment_id,
        "type": "alipay",
        "name": "Product",
        "money": money or f"{payment.amount / 100:.2f}",
        "trade_status": "TRADE_SUCCESS",
    }
    params["sign"] = sign(params, key)
    params["sign_type"] = "MD5"
    return params


def test_signature_is_md5_of_sorted_non_empty_params_then_the_key():
    # The documented rule, worked by hand: sign/sign_type and empty values left out, k=v joined by &.
    import hashlib

    params = {"b": "2", "a": "1", "empty": "", "sign": "x", "sign_type": "MD5"}
    assert sign(params, "KEY") == hashlib.md5(b"a=1&b=2KEY").hexdigest()


def test_pay_url_is_the_signed_submit_url():
    placed = place(gateway="epay")
    url = urlsplit(placed.pay_url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://pay.example.net/submit.php"
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert params["pid"] == "1001"
    assert params["out_trade_no"] == placed.payment.payment_id
    assert params["money"] == "15.00"
    assert params["notify_url"] == "https://shop.example.com/payments/epay/notify/"
    assert params["return_url"].startswith("https://shop.example.com/orders/")
    assert params["sign_type"] == "MD5"
    assert params["sign"] == sign(params, EPAY_KEY)


def test_good_notify_by_get_delivers_and_answers_success(run_on_commit):
    placed = place(gateway="epay")
    with run_on_commit():
        response = Client().get(NOTIFY, notify_params(placed.payment))
    assert (response.status_code, response.content) == (200, b"success")
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.DELIVERED
    payment = placed.order.payments.get()
    assert (payment.status, payment.provider_reference) == (PaymentStatus.SUCCEEDED, "2026113012000001")
    assert ledger_problems() == []


def test_good_notify_by_post_is_accepted_too(run_on_commit):
    placed = place(gateway="epay")
    with run_on_commit():
        response = Client().post(NOTIFY, urlencode(notify_params(placed.payment)), "application/x-www-form-urlencoded")
    assert response.content == b"success"
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.DELIVERED


def test_bad_signature_answers_fail_and_changes_nothing():
    placed = place(gateway="epay")
    response = Client().get(NOTIFY, notify_params(placed.payment, key="not-the-key"))
    assert (response.status_code, response.content) == (400, b"fail")
    assert placed.order.payments.get().status == PaymentStatus.PENDING
    assert WebhookEvent.objects.count() == 0 and Transfer.objects.count() == 0


def test_a_changed_amount_after_signing_is_rejected():
    placed = place(gateway="epay")
    params = notify_params(placed.payment)
    params["money"] = "0.01"
    assert Client().get(NOTIFY, params).content == b"fail"
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.AWAITING_PAYMENT


def test_replayed_notify_books_once(run_on_commit):
    placed = place(gateway="epay")
    params = notify_params(placed.payment)
    with run_on_commit():
        first = Client().get(NOTIFY, params)
        second = Client().get(NOTIFY, params)
    assert first.content == second.content == b"success"  # epay stops resending only on "success"
    assert WebhookEvent.objects.filter(gateway="epay").count() == 1
    assert Transfer.objects.filter(code="payment").count() == 1


def test_amount_mismatch_is_held_for_review(run_on_commit):
    placed = place(gateway="epay")
    with run_on_commit():
        response = Client().get(NOTIFY, notify_params(placed.payment, money="1.00"))
    assert response.content == b"success"
    order = Order.objects.get(pk=placed.order.pk)
    assert order.status == OrderStatus.HELD_FOR_REVIEW
    assert order.payments.get().received_amount == 100
    assert ledger_problems() == []


def test_unknown_order_answers_fail():
    placed = place(gateway="epay")
    params = notify_params(placed.payment)
    params["out_trade_no"] = "ep_nobody"
    params["sign"] = sign(params, EPAY_KEY)
    assert Client().get(NOTIFY, params).content == b"fail"
    assert WebhookEvent.objects.count() == 0


def test_notify_for_another_merchant_id_is_rejected():
    placed = place(gateway="epay")
    params = notify_params(placed.payment)
    params["pid"] = "9999"
    params["sign"] = sign(params, EPAY_KEY)
    assert Client().get(NOTIFY, params).content == b"fail"


def test_not_configured_answers_404(settings):
    placed = place(gateway="epay")
    settings.EPAY_KEY = ""
    assert Client().get(NOTIFY, notify_params(placed.payment)).status_code == 404


def test_refund_waits_for_staff_and_is_settled_by_hand(run_on_commit):
    placed = place(gateway="epay")
    with run_on_commit():
        Client().get(NOTIFY, notify_params(placed.payment))
    with run_on_commit():
        refund = refunds.order_refund(order_pk=placed.order.pk, now=timezone.now())
    refund.refresh_from_db()
    # No refund API: nothing asked of epay, the refund stays owed and listed for staff.
    assert (refund.status, refund.gateway_refund_id) == (RefundStatus.REQUESTED, None)
    staff = factories.user_create(is_staff=True)
    paid = refunds.refund_paid_by_hand(refund_pk=refund.pk, staff=staff, reference="ALI-778899", now=timezone.now())
    assert paid.status == RefundStatus.SUCCEEDED
    assert Transfer.objects.filter(transfer_id=f"refund:{refund.pk}:paid").exists()
    with pytest.raises(refunds.RefundRefused):
        refunds.refund_paid_by_hand(refund_pk=refund.pk, staff=staff, reference="again", now=timezone.now())
    assert Refund.objects.get(pk=refund.pk).gateway_refund_id == f"hand:{refund.pk}:ALI-778899"
    assert ledger_problems() == []


def test_staff_payments_page_shows_gateways_and_the_refund_to_pay_by_hand(run_on_commit, client):
    placed = place(gateway="epay")
    with run_on_commit():
        Client().get(NOTIFY, notify_params(placed.payment))
    with run_on_commit():
        refund = refunds.order_refund(order_pk=placed.order.pk, now=timezone.now())
    staff = factories.user_create(is_staff=True)
    factories.login_verified(client, staff)
    page = client.get("/staff/payments/").text
    assert '<tr data-gateway="epay"><td>epay</td>\n      <td>configured</td>' in page
    assert "to be refunded by hand" in page
    response = client.post("/staff/payments/", {"refund": refund.pk, "reference": "WX-1"})
    assert response.status_code == 302
    assert Refund.objects.get(pk=refund.pk).status == RefundStatus.SUCCEEDED
    assert "No refund is waiting." in client.get("/staff/payments/").text
    assert ledger_problems() == []


def test_staff_payments_page_is_for_staff_only(client):
    factories.login_verified(client, factories.user_create())
    assert client.get("/staff/payments/").status_code == 302  # to the admin login
