"""Alipay (支付宝) open platform: page pay (电脑网站支付) and phone pay (手机网站支付), RSA2.

Every request carries the common parameters (`app_id, method, format, charset, sign_type, timestamp,
version`, …) and a JSON `biz_content`, signed SHA256withRSA (PKCS#1 v1.5) under the shop's private key
(`ALIPAY_PRIVATE_KEY`) over the parameters sorted by name, `sign` and empty values left out, joined as
`k=v&k=v…` (values not URL-encoded). The asynchronous notify (`/payments/alipay/notify/`, a form
POST) is verified the same way under Alipay's public key (`ALIPAY_PUBLIC_KEY`), leaving out `sign`
and `sign_type`; the shop answers the plain text `success`.

Refunds go through `alipay.trade.refund`, whose signed answer is itself the confirmation
(`refund_settles_on_answer`): the shop settles the refund as soon as Alipay says the money moved.
Built on `cryptography` (already a dependency) and `requests`, instead of an SDK: the protocol is one
signature scheme and two calls.
"""

import base64
import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from core.money import Currency, MoneyError, from_major, to_major
from escrow.gateways.base import (
    GatewayConnectionError,
    GatewayEvent,
    GatewayRecord,
    RefundDeclined,
    WebhookRejected,
    amount_check,
    body_check,
    event_id_check,
    own_records,
    reference_check,
    shop_url,
)

BEIJING = ZoneInfo("Asia/Shanghai")
PAID = {"TRADE_SUCCESS", "TRADE_FINISHED"}
REFUND_TIMEOUT_SECONDS = 15


def _pem(text: str, kind: str) -> bytes:
    """A key as PEM, whether given as PEM or as the bare base64 Alipay's key tool prints."""
    text = text.strip().replace("\\n", "\n")
    if "-----BEGIN" in text:
        return text.encode()
    body = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n".encode()


def private_key(text: str) -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(_pem(text, "PRIVATE KEY"), password=None)


def public_key(text: str) -> rsa.RSAPublicKey:
    return serialization.load_pem_public_key(_pem(text, "PUBLIC KEY"))


def signing_text(params: Mapping[str, str], *, leave_out: tuple[str, ...]) -> str:
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in leave_out and params[k] != "")


def rsa2_sign(text: str, key: rsa.RSAPrivateKey) -> str:
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_verify(text: str, signature: str, key: rsa.RSAPublicKey) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), text.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def request_params(*, method: str, biz_content: dict, now: datetime, **extra: str) -> dict[str, str]:
    """A signed request's parameters (the common ones, `biz_content` and any extra such as notify_url)."""
    params = {
        "app_id": settings.ALIPAY_APP_ID,
        "method": method,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": now.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
        "version": "1.0",
        "biz_content": json.dumps(biz_content, ensure_ascii=False, separators=(",", ":")),
        **extra,
    }
    params["sign"] = rsa2_sign(signing_text(params, leave_out=("sign",)), private_key(settings.ALIPAY_PRIVATE_KEY))
    return params


def response_verified(raw: str, *, method: str) -> dict:
    """The `<method>_response` object of an Alipay answer, after checking its signature: Alipay signs
    the exact text of that object, so it is cut from the raw answer rather than re-serialised."""
    key_name = method.replace(".", "_") + "_response"
    try:
        data = json.loads(raw)
        start = raw.index(f'"{key_name}"')
        start = raw.index("{", start + len(key_name) + 2)
        _, end = json.JSONDecoder().raw_decode(raw, start)
        signed_text = raw[start:end]
        answer = data[key_name]
    except (ValueError, KeyError, TypeError):
        raise GatewayConnectionError(f"Alipay answered something that is not a {method} response.") from None
    signature = data.get("sign")
    if not signature or not rsa2_verify(signed_text, signature, public_key(settings.ALIPAY_PUBLIC_KEY)):
        raise GatewayConnectionError("Alipay's answer is not signed by Alipay.")
    return answer


class AlipayGateway:
    name = "alipay"
    currencies = frozenset({Currency.CNY})
    refunds_by_hand = False
    refund_settles_on_answer = True

    def is_configured(self) -> bool:
        return bool(settings.ALIPAY_APP_ID and settings.ALIPAY_PRIVATE_KEY and settings.ALIPAY_PUBLIC_KEY)

    def payment_id_new(self) -> str:
        return "ali" + secrets.token_hex(12)

    def pay_url(self, *, payment, return_url: str, method: str = "") -> str:
        """Page pay (a computer), or with `method="wap"` phone pay; both land on Alipay's cashier."""
        phone = method == "wap"
        biz = {
            "out_trade_no": payment.payment_id,
            "product_code": "QUICK_WAP_WAY" if phone else "FAST_INSTANT_TRADE_PAY",
            "total_amount": to_major(payment.amount, payment.currency),
            "subject": payment.order.product.title[:256] or payment.payment_id,
            "timeout_express": f"{settings.RESERVATION_MINUTES}m",
        }
        params = request_params(
            method="alipay.trade.wap.pay" if phone else "alipay.trade.page.pay",
            biz_content=biz,
            now=timezone.now(),
            notify_url=shop_url(reverse("alipay:notify")),
            return_url=shop_url(return_url),
        )
        return settings.ALIPAY_GATEWAY_URL + "?" + urlencode(params)

    def webhook_parse(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> GatewayEvent:
        """`body` is the notify's form, url-encoded as Alipay posts it."""
        if not self.is_configured():
            raise WebhookRejected("The alipay gateway is not configured.")
        try:
            params = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        except (UnicodeDecodeError, ValueError):
            raise WebhookRejected("Malformed notify.") from None
        text = signing_text(params, leave_out=("sign", "sign_type"))
        if not rsa2_verify(text, params.get("sign", ""), public_key(settings.ALIPAY_PUBLIC_KEY)):
            raise WebhookRejected("Signature does not match.")
        if params.get("app_id") != settings.ALIPAY_APP_ID:
            raise WebhookRejected("Notify is for another app.")
        try:
            status = params["trade_status"]
            event_id = event_id_check(params["notify_id"])
            reference_check(params["out_trade_no"])
            reference_check(params["trade_no"])
            amount = amount_check(from_major(params["total_amount"], Currency.CNY))
            body_check(params)
        except (KeyError, ValueError, MoneyError):
            raise WebhookRejected("Malformed notify.") from None
        # A notify about a refund (it carries the refund's out_biz_no) or a trade closed or still
        # waiting moves no money here: refunds settle on Alipay's answer to the shop's own request.
        refund_notice = bool(params.get("out_biz_no") or params.get("gmt_refund"))
        event_type = "payment.succeeded" if status in PAID and not refund_notice else "payment.noted"
        return GatewayEvent(
            event_id=event_id,
            type=event_type,
            payment_id=params["out_trade_no"],
            amount=amount,
            currency=Currency.CNY,
            body=params,
            provider_reference=params["trade_no"],
        )

    def refund_request(self, *, payment_id: str, amount: int, currency: str, idempotency_key: str) -> str:
        """`alipay.trade.refund` with `out_request_no` = the shop's key: Alipay refunds once per key, so a
        retry answers the same refund. Returns that key as the refund id once Alipay says it paid."""
        import requests

        params = request_params(
            method="alipay.trade.refund",
            biz_content={
                "out_trade_no": payment_id,
                "refund_amount": to_major(amount, currency),
                "out_request_no": idempotency_key,
            },
            now=timezone.now(),
        )
        try:
            response = requests.post(settings.ALIPAY_GATEWAY_URL, data=params, timeout=REFUND_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise GatewayConnectionError(f"Alipay could not be reached: {error}") from None
        if response.status_code >= 500:
            raise GatewayConnectionError(f"Alipay answered HTTP {response.status_code}.")
        answer = response_verified(response.text, method="alipay.trade.refund")
        if answer.get("code") != "10000":
            raise RefundDeclined(f"Alipay refused the refund: {answer.get('sub_code')} {answer.get('sub_msg')}")
        return idempotency_key

    def records(self, *, since: datetime, until: datetime) -> list[GatewayRecord]:
        # Alipay's bill download (alipay.data.dataservice.bill.downloadurl.query) is daily CSV in a ZIP;
        # until it is wired in, reconciliation compares the shop's own settled rows.
        return own_records(gateway=self.name, since=since, until=until)
