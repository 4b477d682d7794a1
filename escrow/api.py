from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone, translation
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

import risk
from core.api import error_responses
from core.client_ip import client_ip
from core.money import to_major
from core.ratelimit import RateAttempt
from core.sessionless import session_not_required
from escrow import services
from escrow.key_reveal import keys_reveal_for_request
from escrow.models import Order
from escrow.selectors import order_for_viewer

ORDER_TOKEN = OpenApiParameter(
    "X-Order-Token",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="A guest's order access token (signed-in buyers use their session).",
)


def _order_of(request, pk: int, *, status_only: bool = False) -> Order:
    return order_for_viewer(
        pk=pk, token=request.headers.get("X-Order-Token"), user=request.user, status_only=status_only
    )


class OrderCreateSerializer(serializers.Serializer):
    product = serializers.IntegerField()
    quantity = serializers.IntegerField()
    email = serializers.EmailField()
    gateway = serializers.CharField(
        required=False,
        max_length=32,
        help_text="sandbox, epay, alipay or stripe; default: the first configured one that takes the product's "
        "currency. An unknown name answers 400 unknown_gateway, one not configured here 400 gateway_unavailable.",
    )
    pay_method = serializers.ChoiceField(
        required=False,
        choices=["alipay", "wxpay", "qqpay", "wap"],
        help_text="For epay: alipay / wxpay / qqpay (left out: the provider's cashier asks). For alipay: wap "
        "(phone pay) instead of page pay.",
    )
    coupon = serializers.CharField(required=False, allow_blank=True, max_length=32, default="")


_PLAIN_FIELDS = {"product", "quantity", "email", "coupon"}
_COUPON_MAX_LENGTH = OrderCreateSerializer().fields["coupon"].max_length


def order_create_plain(data) -> dict | None:
    """The body of `POST /api/v1/orders/` validated without the serializer when it has the plain shape
    a client sends (a JSON object; whole numbers; an ASCII e-mail as typed, without spaces around it;
    maybe an ASCII coupon), else None and `OrderCreateSerializer` decides and words any error. Where
    this answers, it answers what the serializer would (tests/escrow/test_api.py compares them); it
    spares the checkout the serializer's copy of its fields per request (issue 9)."""
    if type(data) is not dict or "gateway" in data or "pay_method" in data:
        return None
    product, quantity, email = data.get("product"), data.get("quantity"), data.get("email")
    if type(product) is not int or type(quantity) is not int or type(email) is not str:
        return None
    if not email.isascii() or email != email.strip():
        return None
    try:
        validate_email(email)
    except ValidationError:
        return None
    coupon = data.get("coupon", "")
    if type(coupon) is not str or not coupon.isascii():
        return None
    coupon = coupon.strip()
    if "\x00" in coupon or len(coupon) > _COUPON_MAX_LENGTH:
        return None
    return {"product": product, "quantity": quantity, "email": email, "coupon": coupon}


class OrderSerializer(serializers.ModelSerializer):
    product = serializers.IntegerField(source="product_id")
    amount = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = ["id", "status", "product", "quantity", "amount", "currency", "created_at", "delivered_at"]

    def get_amount(self, order: Order) -> str:
        return to_major(order.amount, order.currency)


@method_decorator(session_not_required, name="dispatch")
class OrderCreate(APIView):
    # The "checkout" rate limit, shared with the web checkout form (escrow.views.checkout): one budget
    # per client address, every attempt counted, valid or not, and over it 429 before anything else.
    # It is counted by the risk engine's Redis command (`post`), not by a round trip of its own.
    throttle_classes: list = []

    @extend_schema(
        request=OrderCreateSerializer,
        responses={
            201: inline_serializer(
                "PlacedOrder",
                {
                    "id": serializers.IntegerField(),
                    "status": serializers.CharField(),
                    "access_token": serializers.CharField(),
                    "payment": inline_serializer(
                        "PaymentStart",
                        {
                            "gateway": serializers.CharField(),
                            "payment_id": serializers.CharField(),
                            "pay_url": serializers.CharField(),
                            "amount": serializers.CharField(),
                            "currency": serializers.CharField(),
                        },
                    ),
                },
            ),
            **error_responses(
                {
                    400: [
                        "invalid",
                        "not_for_sale",
                        "bad_quantity",
                        "bad_email",
                        "unknown_gateway",
                        "gateway_unavailable",
                        "gateway_currency",
                        "coupon_unknown",
                        "coupon_expired",
                    ],
                    # With "decision": the id of the stored risk decision staff can read.
                    403: ["challenge_required", "risk_blocked", "spending_limit"],
                    409: ["out_of_stock", "reservation_limit", "coupon_used_up"],
                    429: ["throttled"],
                    503: ["no_gateway"],
                }
            ),
        },
    )
    def post(self, request):
        ip = client_ip(request)
        attempt = RateAttempt(scope="checkout", identity=ip)
        try:
            validated = order_create_plain(request.data)
            if validated is None:
                data = OrderCreateSerializer(data=request.data)
                data.is_valid(raise_exception=True)
                validated = data.validated_data
            email = validated["email"]
            # An API client cannot answer a captcha: a challenge is a 403 "challenge_required" here.
            placed = services.order_place_assessed(
                risk_context=risk.context_from_request(request, email=email),
                rate=attempt,
                product_pk=validated["product"],
                quantity=validated["quantity"],
                email=email,
                buyer=request.user,
                now=timezone.now(),
                ip=ip or None,
                gateway_name=validated.get("gateway"),
                pay_method=validated.get("pay_method", ""),
                coupon_code=validated["coupon"],
                language=translation.get_language() or "",
            )
        except Exception:
            attempt.count()  # refused before the engine counted it (bad input, no gateway): 429 first
            raise
        payment = placed.payment
        return Response(
            {
                "id": placed.order.pk,
                "status": placed.order.status,
                "access_token": placed.access_token,
                "payment": {
                    "gateway": payment.gateway,
                    "payment_id": payment.payment_id,
                    "pay_url": request.build_absolute_uri(placed.pay_url),
                    "amount": to_major(payment.amount, payment.currency),
                    "currency": payment.currency,
                },
            },
            status=status.HTTP_201_CREATED,
        )


@method_decorator(session_not_required, name="dispatch")
class OrderDetail(APIView):
    @extend_schema(parameters=[ORDER_TOKEN], responses={200: OrderSerializer, **error_responses({404: ["not_found"]})})
    def get(self, request, pk: int):
        return Response(OrderSerializer(_order_of(request, pk)).data)


@method_decorator(session_not_required, name="dispatch")
@method_decorator(never_cache, name="dispatch")
class OrderKeys(APIView):
    @extend_schema(
        parameters=[ORDER_TOKEN],
        responses={
            200: inline_serializer("OrderKeys", {"keys": serializers.ListField(child=serializers.CharField())}),
            **error_responses({404: ["not_found"], 409: ["not_delivered"], 429: ["throttled"]}),
        },
    )
    def get(self, request, pk: int):
        # One statement while the order is not delivered (the buyer's poll answers 409), two once it
        # is: this read, then the reveal recorded and the keys read under the order's lock.
        order = _order_of(request, pk, status_only=True)
        keys = keys_reveal_for_request(request, order, channel="api")
        return Response({"keys": keys})


@method_decorator(session_not_required, name="dispatch")
class OrderConfirm(APIView):
    @extend_schema(
        parameters=[ORDER_TOKEN],
        request=None,
        responses={
            200: inline_serializer("OrderConfirmed", {"status": serializers.CharField()}),
            **error_responses({404: ["not_found"], 409: ["bad_state"]}),
        },
    )
    def post(self, request, pk: int):
        order = _order_of(request, pk)
        order = services.order_confirm_receipt(order=order, now=timezone.now(), actor=request.user)
        return Response({"status": order.status})
