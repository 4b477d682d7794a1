"""Alipay: RSA2-signed page pay, the notify verified under Alipay's key (made here), the refund API faked
at the HTTP layer."""

import base64
import json
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.test import Client
from django.utils import timezone

from escrow import refunds
from escrow.gateways.alipay.gateway import signing_text
from escrow.ledger_checks import ledger_problems
from escrow.models import Order, OrderStatus, PaymentStatus, Refund, RefundStatus, Transfer, WebhookEvent
from tests.escrow.gateways.conftest import place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("real_gateways")]

NOTIFY = "/payments/alipay/notify/"
GATEWAY = "https://openapi.alipay.example/gateway.do"


def rsa2(key, text: str) -> str:
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def notify_body(payment, key, *, total: str | None = None, notify_id: str = "n-1", status: str = "TRADE_SUCCESS"):
    # Fields as Alipay's asynchronous notification documents them.
    params = {
        "notify_time": "2026-11-30 20:00:00",
        "notify_type": "trade_status_sync",
        "notify_id": notify_id,
        "app_id": "2021000000000001",
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": "2026113022001400001",
        "out_trade_no": payment.payment_id,
        "trade_status": status,
        "total_amount": total or f"{payment.amount / 100:.2f}",
        "receipt_amount": total or f"{payment.amount / 100:.2f}",
        "subject": "Product",
        "gmt_payment": "2026-11-30 19:59:58",
    }
    params["sign"] = rsa2(key, signing_text(params, leave_out=("sign", "sign_type")))
    params["sign_type"] = "RSA2"
    return urlencode(params)


def post(body: str):
    return Client().post(NOTIFY, body, "application/x-www-form-urlencoded")


def test_pay_url_is_signed_with_the_shops_key(alipay_keys):
    placed = place(gateway="alipay")
    url = urlsplit(placed.pay_url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == GATEWAY
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert (params["method"], params["sign_type"]) == ("alipay.trade.page.pay", "RSA2")
    biz = json.loads(params["biz_content"])
    assert (biz["out_trade_no"], biz["total_amount"]) == (placed.payment.payment_id, "15.00")
    assert params["notify_url"] == "https://shop.example.com/payments/alipay/notify/"
    alipay_keys["shop_key"].public_key().verify(
        base64.b64decode(params["sign"]),
        signing_text(params, leave_out=("sign",)).encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_good_notify_delivers_and_answers_success(alipay_keys, run_on_commit):
    placed = place(gateway="alipay")
    with run_on_commit():
        response = post(notify_body(placed.payment, alipay_keys["alipay_key"]))
    assert (response.status_code, response.content) == (200, b"success")
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.DELIVERED
    assert placed.order.payments.get().provider_reference == "2026113022001400001"
    assert ledger_problems() == []


def test_notify_signed_by_another_key_is_rejected(alipay_keys):
    placed = place(gateway="alipay")
    response = post(notify_body(placed.payment, alipay_keys["shop_key"]))  # not Alipay's key
    assert (response.status_code, response.content) == (400, b"fail")
    assert placed.order.payments.get().status == PaymentStatus.PENDING
    assert WebhookEvent.objects.count() == 0 and Transfer.objects.count() == 0


def test_replayed_notify_books_once(alipay_keys, run_on_commit):
    placed = place(gateway="alipay")
    body = notify_body(placed.payment, alipay_keys["alipay_key"])
    with run_on_commit():
        assert post(body).content == b"success"
        assert post(body).content == b"success"
    assert WebhookEvent.objects.filter(gateway="alipay").count() == 1
    assert Transfer.objects.filter(code="payment").count() == 1


def test_trade_finished_after_success_moves_nothing_more(alipay_keys, run_on_commit):
    placed = place(gateway="alipay")
    with run_on_commit():
        post(notify_body(placed.payment, alipay_keys["alipay_key"]))
        later = post(notify_body(placed.payment, alipay_keys["alipay_key"], notify_id="n-2", status="TRADE_FINISHED"))
    assert later.content == b"success"
    assert Transfer.objects.filter(code="payment").count() == 1


def test_amount_mismatch_is_held_for_review(alipay_keys, run_on_commit):
    placed = place(gateway="alipay")
    with run_on_commit():
        assert post(notify_body(placed.payment, alipay_keys["alipay_key"], total="14.99")).content == b"success"
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.HELD_FOR_REVIEW
    assert ledger_problems() == []


def test_unknown_order_is_rejected(alipay_keys):
    placed = place(gateway="alipay")
    placed.payment.payment_id = "ali_nobody"
    assert post(notify_body(placed.payment, alipay_keys["alipay_key"])).content == b"fail"
    assert WebhookEvent.objects.count() == 0


def _refund_answer(key, *, code="10000", refund_fee="15.00") -> str:
    # Alipay signs the exact text of the *_response object; the answer is built the same way here.
    inner = json.dumps(
        {
            "code": code,
            "msg": "Success",
            "trade_no": "2026113022001400001",
            "fund_change": "Y",
            "refund_fee": refund_fee,
        },
        separators=(",", ":"),
    )
    return '{"alipay_trade_refund_response":' + inner + ',"sign":"' + rsa2(key, inner) + '"}'


@responses.activate
def test_refund_goes_through_the_refund_api_and_settles_on_its_signed_answer(alipay_keys, run_on_commit):
    placed = place(gateway="alipay")
    with run_on_commit():
        post(notify_body(placed.payment, alipay_keys["alipay_key"]))
    responses.post(GATEWAY, body=_refund_answer(alipay_keys["alipay_key"]))
    with run_on_commit():
        refund = refunds.order_refund(order_pk=placed.order.pk, now=timezone.now())
    sent = {k: v[0] for k, v in parse_qs(responses.calls[0].request.body).items()}
    assert sent["method"] == "alipay.trade.refund"
    biz = json.loads(sent["biz_content"])
    assert biz == {
        "out_trade_no": placed.payment.payment_id,
        "refund_amount": "15.00",
        "out_request_no": f"refund:{refund.pk}",
    }
    refund.refresh_from_db()
    assert (refund.status, refund.gateway_refund_id) == (RefundStatus.SUCCEEDED, f"refund:{refund.pk}")
    assert ledger_problems() == []


@responses.activate
def test_refund_answer_not_signed_by_alipay_settles_nothing(alipay_keys, run_on_commit):
    placed = place(gateway="alipay")
    with run_on_commit():
        post(notify_body(placed.payment, alipay_keys["alipay_key"]))
    responses.post(GATEWAY, body=_refund_answer(alipay_keys["shop_key"]))
    refund = refunds.order_refund(order_pk=placed.order.pk, now=timezone.now())
    with pytest.raises(ConnectionError):  # the task retries it (autoretry_for=ConnectionError)
        refunds.refund_submit(refund_pk=refund.pk, now=timezone.now())
    assert Refund.objects.get().status == RefundStatus.REQUESTED
    assert ledger_problems() == []


@responses.activate
def test_refund_declined_by_alipay_stays_owed_for_staff(alipay_keys, run_on_commit):
    placed = place(gateway="alipay")
    with run_on_commit():
        post(notify_body(placed.payment, alipay_keys["alipay_key"]))
    responses.post(GATEWAY, body=_refund_answer(alipay_keys["alipay_key"], code="40004"))
    with run_on_commit():
        refunds.order_refund(order_pk=placed.order.pk, now=timezone.now())
    assert Refund.objects.get().status == RefundStatus.REQUESTED
    assert ledger_problems() == []
