"""The merchant API's orders and money (the products and stock half is `shop/merchant_api.py`, whose
access rules, scopes, limits and pages these views share). Thin: every write is one escrow service;
someone else's order answers 404; the POSTs that move money or stock honour `Idempotency-Key`."""

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import exceptions, generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.idempotency import idempotent
from core.money import Currency, MoneyError, from_major, to_major
from escrow import refunds, withdrawals
from escrow.models import KeyDisposition, Order, OrderStatus, PayoutAccount, Refund, Withdrawal
from escrow.releases import fee_percent_for
from escrow.selectors import (
    merchant_balances,
    merchant_order,
    merchant_orders,
    merchant_statement,
    statement_line,
)
from shop.merchant_api import IDEMPOTENCY_ERRORS, MerchantApi, merchant_errors
from shop.models import ApiScope, CardKey

OTP_FIELD = {"max_length": 16, "help_text": "A fresh code from the authenticator app (or a backup code)."}


def _money(amount: int, currency: str) -> str:
    return to_major(amount, currency)


# --- orders ----------------------------------------------------------------------------------------------


class MerchantOrderSerializer(serializers.ModelSerializer):
    product = serializers.IntegerField(source="product_id")
    product_title = serializers.CharField(source="product.title")
    amount = serializers.SerializerMethodField()
    unit_price = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "product",
            "product_title",
            "quantity",
            "unit_price",
            "amount",
            "currency",
            "created_at",
            "paid_at",
            "delivered_at",
            "inspection_ends_at",
            "completed_at",
        ]

    def get_amount(self, order: Order) -> str:
        return _money(order.amount, order.currency)

    def get_unit_price(self, order: Order) -> str:
        return _money(order.unit_price, order.currency)


class OrderKeySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()


class MerchantRefundSerializer(serializers.ModelSerializer):
    amount = serializers.SerializerMethodField()
    keys = serializers.ListField(source="card_key_pks", child=serializers.IntegerField())

    class Meta:
        model = Refund
        fields = ["id", "status", "amount", "currency", "keys", "key_disposition", "revoked_keys", "created_at"]

    def get_amount(self, refund: Refund) -> str:
        return _money(refund.amount, refund.currency)


class MerchantOrderDetailSerializer(MerchantOrderSerializer):
    keys = serializers.SerializerMethodField(help_text="The order's keys by id and status; never the key itself.")
    refunds = MerchantRefundSerializer(many=True, read_only=True)

    class Meta(MerchantOrderSerializer.Meta):
        fields = [*MerchantOrderSerializer.Meta.fields, "keys", "refunds"]

    @extend_schema_field(OrderKeySerializer(many=True))
    def get_keys(self, order: Order) -> list[dict]:
        keys = CardKey.objects.filter(order=order).order_by("pk").values("pk", "status")
        return [{"id": key["pk"], "status": key["status"]} for key in keys]


class OrderFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)
    since = serializers.DateTimeField(
        required=False, help_text="Orders created at or after this time (ISO 8601; a date means its midnight)."
    )

    def to_internal_value(self, data):
        data = data.copy()
        since = data.get("since")
        if since and len(since) == 10:  # a bare date: its start, in the shop's time zone
            data["since"] = f"{since}T00:00:00"
        return super().to_internal_value(data)


class MerchantOrderList(MerchantApi, generics.ListAPIView):
    """The merchant's orders, newest first; `?status=` one status, `?since=` created at or after."""

    serializer_class = MerchantOrderSerializer
    required_scopes = {"GET": ApiScope.ORDERS}

    def get_queryset(self):
        filters = OrderFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        return merchant_orders(self.request.merchant, status=wanted.get("status"), created_after=wanted.get("since"))

    @extend_schema(
        parameters=[OrderFilterSerializer],
        responses={200: MerchantOrderSerializer(many=True), **merchant_errors({400: ["invalid", "invalid_choice"]})},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class MerchantOrderDetail(MerchantApi, APIView):
    """One order with its keys' ids and statuses (never the keys) and its refunds."""

    required_scopes = {"GET": ApiScope.ORDERS}

    @extend_schema(responses={200: MerchantOrderDetailSerializer, **merchant_errors({404: ["not_found"]})})
    def get(self, request, pk: int):
        order = merchant_order(request.merchant, pk)
        return Response(MerchantOrderDetailSerializer(order).data)


class RefundCreateSerializer(serializers.Serializer):
    keys = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_empty=False,
        max_length=1000,
        help_text="Ids of delivered keys of this order to refund (see the order's `keys`); without it, all.",
    )
    return_to_stock = serializers.BooleanField(
        default=True,
        help_text="Put the refunded keys back on sale when nobody can hold them (never shown, never exported); "
        "false revokes them all.",
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class MerchantOrderRefund(MerchantApi, APIView):
    """Refund the order in full or for some of its delivered keys (once per order): the money goes
    back to the buyer through the payment gateway; the answer says which keys were revoked and why."""

    required_scopes = {"POST": ApiScope.ORDERS}

    @extend_schema(
        request=RefundCreateSerializer,
        responses={
            201: MerchantRefundSerializer,
            **merchant_errors(
                {
                    400: ["invalid", "not_paid", "bad_keys", "bad_disposition", "bad_amounts"],
                    404: ["not_found"],
                    409: ["bad_state"],
                },
                IDEMPOTENCY_ERRORS,
            ),
        },
    )
    @idempotent
    def post(self, request, pk: int):
        order = merchant_order(request.merchant, pk)
        data = RefundCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        refund = refunds.order_refund(
            order_pk=order.pk,
            now=timezone.now(),
            key_pks=data.validated_data.get("keys"),
            disposition=KeyDisposition.RESTOCK if data.validated_data["return_to_stock"] else KeyDisposition.REVOKE,
            reason="merchant",
            note=data.validated_data["note"],
            actor=request.user,
            merchant=request.merchant,
        )
        return Response(MerchantRefundSerializer(refund).data, status=status.HTTP_201_CREATED)


# --- money -----------------------------------------------------------------------------------------------

BalanceSerializer = inline_serializer(
    "MerchantBalance",
    {
        "balances": inline_serializer(
            "MerchantCurrencyBalance",
            {
                "currency": serializers.CharField(),
                "available": serializers.CharField(help_text="Withdrawable now."),
                "escrow": serializers.CharField(help_text="Held for orders still inside their inspection window."),
                "reserve": serializers.CharField(help_text="The rolling reserve, released after its days."),
                "withdrawing": serializers.CharField(help_text="Requested withdrawals staff have not paid yet."),
            },
            many=True,
        ),
        "fee_percent": serializers.CharField(),
        "reserve_percent": serializers.CharField(
            help_text="The share of each release held in the rolling reserve (the merchant's own, else the "
            "platform's); it applies while the merchant is younger than `reserve_days_young`."
        ),
        "reserve_days": serializers.IntegerField(),
    },
)


def reserve_percent_for(merchant) -> str:
    own = getattr(merchant, "reserve_percent", None)  # a merchant may get its own (risk decides)
    return str(own if own is not None else settings.RESERVE_PERCENT)


class MerchantBalance(MerchantApi, APIView):
    required_scopes = {"GET": ApiScope.MONEY}

    @extend_schema(responses={200: BalanceSerializer, **merchant_errors()})
    def get(self, request):
        """Per currency: available, in escrow, in reserve and being withdrawn (decimal strings)."""
        balances = [
            {
                "currency": row["currency"],
                **{
                    part: _money(row[part], row["currency"])
                    for part in ("available", "escrow", "reserve", "withdrawing")
                },
            }
            for row in merchant_balances(request.merchant)
        ]
        return Response(
            {
                "balances": balances,
                "fee_percent": str(fee_percent_for(request.merchant)),
                "reserve_percent": reserve_percent_for(request.merchant),
                "reserve_days": settings.RESERVE_DAYS,
            }
        )


class StatementLineSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    transfer_id = serializers.CharField()
    kind = serializers.CharField()
    code = serializers.CharField()
    account = serializers.CharField()
    direction = serializers.ChoiceField(choices=["in", "out"])
    amount = serializers.CharField(help_text="Signed: negative when money left the account.")
    currency = serializers.CharField()
    order = serializers.IntegerField(allow_null=True)


class StatementFilterSerializer(serializers.Serializer):
    # `from` is a Python keyword: the fields are renamed below.
    from_ = serializers.DateField(required=False, help_text="First day (inclusive), YYYY-MM-DD.")
    to = serializers.DateField(required=False, help_text="Last day (inclusive), YYYY-MM-DD.")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


class MerchantStatement(MerchantApi, generics.GenericAPIView):
    """Every movement of the merchant's money, newest first; `?from=` and `?to=` bound the days."""

    required_scopes = {"GET": ApiScope.MONEY}

    @extend_schema(
        parameters=[StatementFilterSerializer],
        responses={200: StatementLineSerializer(many=True), **merchant_errors({400: ["invalid"]})},
    )
    def get(self, request):
        filters = StatementFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        since, until = filters.validated_data.get("from"), filters.validated_data.get("to")
        if since and until and since > until:
            raise exceptions.ValidationError({"from": [_("Start on or before the last day.")]})
        transfers, own = merchant_statement(request.merchant, since=since, until=until)
        page = self.paginate_queryset(transfers)
        lines = []
        for transfer in page:
            line = statement_line(transfer, own)
            lines.append(
                {
                    "id": transfer.pk,
                    **line,
                    "kind": str(line["kind"]),
                    "account": str(line["account"]),
                    "amount": _money(line["amount"], line["currency"]),
                }
            )
        return self.get_paginated_response(StatementLineSerializer(lines, many=True).data)


class PayoutAccountSerializer(serializers.ModelSerializer):
    kind = serializers.CharField(source="provider")
    holder = serializers.CharField(source="holder_name")
    number = serializers.CharField(source="number_masked", help_text="Masked: only the last four characters.")

    class Meta:
        model = PayoutAccount
        fields = ["id", "kind", "label", "holder", "number", "created_at"]


class PayoutAccountCreateSerializer(serializers.Serializer):
    kind = serializers.CharField(max_length=64, help_text="The bank or wallet, e.g. `alipay`, `ICBC`.")
    holder = serializers.CharField(max_length=100)
    number = serializers.CharField(max_length=64, help_text="The account number or wallet id.")
    label = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    otp = serializers.CharField(**OTP_FIELD)


class MerchantPayoutAccounts(MerchantApi, generics.ListAPIView):
    """Where withdrawals are paid (numbers masked), or save one more (after a fresh second factor)."""

    serializer_class = PayoutAccountSerializer
    required_scopes = {"GET": ApiScope.MONEY, "POST": ApiScope.MONEY}

    def get_queryset(self):
        return PayoutAccount.objects.filter(merchant=self.request.merchant)

    @extend_schema(responses={200: PayoutAccountSerializer(many=True), **merchant_errors()})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=PayoutAccountCreateSerializer,
        responses={
            201: PayoutAccountSerializer,
            **merchant_errors({400: ["invalid", "two_factor_required", "bad_code"]}, IDEMPOTENCY_ERRORS),
        },
    )
    @idempotent
    def post(self, request):
        data = PayoutAccountCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        account = withdrawals.payout_account_add(
            merchant=request.merchant,
            label=fields["label"] or fields["kind"],
            holder_name=fields["holder"],
            account_number=fields["number"],
            provider=fields["kind"],
            code=fields["otp"],
            actor=request.user,
            now=timezone.now(),
        )
        return Response(PayoutAccountSerializer(account).data, status=status.HTTP_201_CREATED)


class WithdrawalSerializer(serializers.ModelSerializer):
    amount = serializers.SerializerMethodField()

    class Meta:
        model = Withdrawal
        fields = ["id", "status", "amount", "currency", "payout_account", "requested_at", "decided_at"]

    def get_amount(self, withdrawal: Withdrawal) -> str:
        return _money(withdrawal.amount, withdrawal.currency)


class WithdrawalCreateSerializer(serializers.Serializer):
    amount = serializers.CharField(max_length=32, help_text="A decimal string in major units, e.g. `100.00`.")
    currency = serializers.ChoiceField(choices=Currency.choices)
    payout_account = serializers.IntegerField(min_value=1, help_text="The id of one of your payout accounts.")
    otp = serializers.CharField(**OTP_FIELD)

    def validate(self, attrs):
        try:
            attrs["amount_minor"] = from_major(attrs["amount"], attrs["currency"])
        except MoneyError:
            raise exceptions.ValidationError(
                {"amount": [_("Give the amount as a decimal string, e.g. 100.00.")]}, code="bad_amount"
            ) from None
        if attrs["amount_minor"] <= 0:
            raise exceptions.ValidationError({"amount": [_("Withdraw more than zero.")]}, code="bad_amount")
        return attrs


class MerchantWithdrawals(MerchantApi, generics.ListAPIView):
    """The merchant's withdrawals, or a new one: the amount leaves the available balance at once and
    staff pay it out (after a fresh second factor)."""

    serializer_class = WithdrawalSerializer
    required_scopes = {"GET": ApiScope.MONEY, "POST": ApiScope.MONEY}

    def get_queryset(self):
        return Withdrawal.objects.filter(merchant=self.request.merchant)

    @extend_schema(responses={200: WithdrawalSerializer(many=True), **merchant_errors()})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=WithdrawalCreateSerializer,
        responses={
            201: inline_serializer(
                "WithdrawalRequested", {"id": serializers.IntegerField(), "status": serializers.CharField()}
            ),
            **merchant_errors(
                {
                    400: [
                        "invalid",
                        "bad_amount",
                        "below_minimum",
                        "no_payout_account",
                        "insufficient_funds",
                        "two_factor_required",
                        "bad_code",
                    ]
                },
                IDEMPOTENCY_ERRORS,
            ),
        },
    )
    @idempotent
    def post(self, request):
        data = WithdrawalCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        withdrawal = withdrawals.withdrawal_request(
            merchant=request.merchant,
            user=request.user,
            payout_account_pk=data.validated_data["payout_account"],
            amount=data.validated_data["amount_minor"],
            currency=data.validated_data["currency"],
            code=data.validated_data["otp"],
            now=timezone.now(),
        )
        return Response({"id": withdrawal.pk, "status": withdrawal.status}, status=status.HTTP_201_CREATED)
