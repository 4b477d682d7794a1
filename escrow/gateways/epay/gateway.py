"""易支付 (epay): the protocol most Chinese card shops speak.

The buyer is sent to `EPAY_URL` + `submit.php` with `pid, type, out_trade_no, notify_url, return_url,
name, money, sign, sign_type=MD5`; `type` chooses alipay / wxpay / qqpay (left out, the provider's own
cashier page lets the buyer choose). The provider then calls `notify_url` (GET, some POST) with
`pid, trade_no, out_trade_no, type, name, money, trade_status, sign, sign_type` and expects the plain
text `success`.

The signature is MD5 over the parameters sorted by name, leaving out `sign`, `sign_type` and empty
values, joined as `k=v&k=v…`, followed directly by the merchant key (`EPAY_KEY`), in lower-case hex.

The protocol has no standard refund API: a refund is booked as usual and waits, listed on the staff
payments page, until staff pay it back by hand (`refunds_by_hand`).
"""

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qs, urlencode

from django.conf import settings
from django.urls import reverse

from core.money import Currency, MoneyError, from_major, to_major
from escrow.gateways.base import (
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

PAY_TYPES = ("alipay", "wxpay", "qqpay")
# The only status a real epay notify carries; anything else is not a payment.
TRADE_SUCCESS = "TRADE_SUCCESS"
NOTIFY_FIELDS = ("pid", "trade_no", "out_trade_no", "type", "name", "money", "trade_status")


def sign(params: Mapping[str, str], key: str) -> str:
    """The epay MD5 signature of `params` under the merchant `key`."""
    signed = sorted((k, str(v)) for k, v in params.items() if k not in ("sign", "sign_type") and str(v) != "")
    text = "&".join(f"{k}={v}" for k, v in signed)
    return hashlib.md5((text + key).encode()).hexdigest()  # noqa: S324 (the protocol's own choice)


def submit_url(params: Mapping[str, str]) -> str:
    return settings.EPAY_URL.rstrip("/") + "/submit.php?" + urlencode(params)


class EpayGateway:
    name = "epay"
    currencies = frozenset({Currency.CNY})
    refunds_by_hand = True
    refund_settles_on_answer = False

    def is_configured(self) -> bool:
        return bool(settings.EPAY_URL and settings.EPAY_PID and settings.EPAY_KEY)

    def payment_id_new(self) -> str:
        return "ep" + secrets.token_hex(12)

    def pay_url(self, *, payment, return_url: str, method: str = "") -> str:
        params = {
            "pid": settings.EPAY_PID,
            "type": method if method in PAY_TYPES else settings.EPAY_DEFAULT_TYPE,
            "out_trade_no": payment.payment_id,
            "notify_url": shop_url(reverse("epay:notify")),
            "return_url": shop_url(return_url),
            "name": payment.order.product.title[:100] or payment.payment_id,
            "money": to_major(payment.amount, payment.currency),
        }
        params = {k: v for k, v in params.items() if v != ""}
        params["sign"] = sign(params, settings.EPAY_KEY)
        params["sign_type"] = "MD5"
        return submit_url(params)

    def webhook_parse(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> GatewayEvent:
        """`body` is the notify's parameters, url-encoded (the query string of a GET, the form of a POST)."""
        try:
            params = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        except (UnicodeDecodeError, ValueError):
            raise WebhookRejected("Malformed notify.") from None
        if not self.is_configured():  # an MD5 under an empty key proves nothing
            raise WebhookRejected("The epay gateway is not configured.")
        given = params.get("sign", "")
        if params.get("sign_type", "MD5").upper() != "MD5" or not hmac.compare_digest(
            sign(params, settings.EPAY_KEY), given.lower()
        ):
            raise WebhookRejected("Signature does not match.")
        if params.get("pid") != str(settings.EPAY_PID):
            raise WebhookRejected("Notify is for another merchant id.")
        try:
            if any(not params.get(field) for field in NOTIFY_FIELDS):
                raise ValueError
            if params["trade_status"] != TRADE_SUCCESS:
                raise ValueError
            reference_check(params["out_trade_no"])
            reference_check(params["trade_no"])
            # One event per provider trade: epay repeats its notify until it reads "success".
            event_id = event_id_check(f"trade:{params['trade_no']}")
            amount = amount_check(from_major(params["money"], Currency.CNY))
            body_check(params)
        except (ValueError, MoneyError):
            raise WebhookRejected("Malformed notify.") from None
        return GatewayEvent(
            event_id=event_id,
            type="payment.succeeded",
            payment_id=params["out_trade_no"],
            amount=amount,
            currency=Currency.CNY,
            body=params,
            provider_reference=params["trade_no"],
        )

    def refund_request(self, *, payment_id: str, amount: int, currency: str, idempotency_key: str) -> str:
        # Never called: `refunds_by_hand` sends epay's refunds to staff. Should it be, it declines.
        raise RefundDeclined("epay has no refund API: refunds are paid by hand (refunds_by_hand).")

    def records(self, *, since: datetime, until: datetime) -> list[GatewayRecord]:
        """Epay offers no statement download the shop could trust: its own settled rows."""
        return own_records(gateway=self.name, since=since, until=until)
