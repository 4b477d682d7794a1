"""The disputes API. Buyers: a signed-in session, or a guest's `X-Order-Token` holding the order's access
token. Merchants: their API token (or verified session). Staff: a staff API token (minted only after a
fresh second factor) or a verified session. Anyone else asking for a dispute gets 404."""

from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, generics, permissions, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import StaffTokenAuthentication
from core.api import error_responses
from core.scopes import ScopeRequired
from core.throttling import TokenAndAddressThrottle
from disputes import selectors, services
from disputes.models import (
    BUYER_CLOCK,
    MERCHANT_CLOCK,
    STATEMENT_MAX_LENGTH,
    Dispute,
    DisputeMessage,
    DisputeReason,
    DisputeStatus,
    MessageRole,
)
from escrow.selectors import order_for_viewer
from shop.authentication import MerchantTokenAuthentication
from shop.merchant_api import ACCESS_ERRORS, IsApprovedMerchant

ORDER_TOKEN = OpenApiParameter(
    "X-Order-Token",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="A guest buyer's order access token (signed-in buyers use their session).",
)
PARTIES = [StaffTokenAuthentication, MerchantTokenAuthentication, SessionAuthentication]
STATE_ERRORS = {404: ["not_found"], 409: ["bad_state"]}
# A merchant's token needs the `orders` scope for the merchant's dispute calls (core.scopes), within
# the merchant API's limits per token and address (core.throttling).
MERCHANT_ACCESS = {**ACCESS_ERRORS, 403: ["permission_denied", "scope"], 429: ["throttled"]}


class DisputeMessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = DisputeMessage
        fields = ["id", "role", "body", "question_for", "created_at"]


class DisputeSerializer(serializers.ModelSerializer):
    order = serializers.IntegerField(source="order_id")
    keys = serializers.SerializerMethodField()
    deadline_for = serializers.SerializerMethodField()
    messages = DisputeMessageSerializer(many=True, read_only=True)

    class Meta:
        model = Dispute
        fields = [
            "id",
            "order",
            "status",
            "reason",
            "statement",
            "keys",
            "created_at",
            "deadline",
            "deadline_for",
            "escalated_at",
            "reopen_count",
            "outcome",
            "buyer_percent",
            "decision_reason",
            "resolved_at",
            "messages",
        ]

    def get_keys(self, dispute: Dispute) -> list[int]:
        return sorted(key.pk for key in dispute.keys.all())

    def get_deadline_for(self, dispute: Dispute) -> str | None:
        """Whose answer the deadline waits for: "merchant", "buyer", "staff" (arbitration) or null."""
        if dispute.status in MERCHANT_CLOCK:
            return "merchant"
        if dispute.status in BUYER_CLOCK:
            return "buyer"
        return "staff" if dispute.status == DisputeStatus.ESCALATED else None


StatusSerializer = inline_serializer("DisputeStatus", {"status": serializers.CharField()})


def _status(dispute: Dispute) -> Response:
    return Response({"status": dispute.status})


def _viewer(request, pk: int) -> tuple[Dispute, str]:
    """The dispute and the caller's role; a merchant's or staff member's session must have passed the
    second factor (their tokens were minted behind one)."""
    dispute, role = selectors.dispute_for_viewer(
        pk=pk, user=request.user, order_token=request.headers.get("X-Order-Token")
    )
    if (
        role in {MessageRole.MERCHANT, MessageRole.STAFF}
        and isinstance(request.successful_authenticator, SessionAuthentication)
        and not request.user.is_verified()
    ):
        raise exceptions.PermissionDenied(_("Confirm your sign-in with a code from your authenticator app."))
    return dispute, role


def _as_buyer(request, pk: int) -> Dispute:
    dispute, role = _viewer(request, pk)
    if role != MessageRole.BUYER:
        raise exceptions.PermissionDenied(_("Only the buyer may do this."))
    return dispute


# --- the buyer ---------------------------------------------------------------------------------------


class DisputeOpenSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=DisputeReason.choices)
    statement = serializers.CharField(max_length=STATEMENT_MAX_LENGTH)
    keys = serializers.ListField(child=serializers.IntegerField(), required=False, allow_empty=False)


class DisputeOpen(APIView):
    @extend_schema(
        parameters=[ORDER_TOKEN],
        request=DisputeOpenSerializer,
        responses={
            201: inline_serializer(
                "OpenedDispute",
                {
                    "id": serializers.IntegerField(),
                    "status": serializers.CharField(),
                    "deadline": serializers.DateTimeField(),
                },
            ),
            **error_responses(
                {
                    400: ["invalid", "bad_keys", "too_long"],
                    404: ["not_found"],
                    409: ["outside_window", "already_disputed", "bad_state", "email_unverified"],
                }
            ),
        },
    )
    def post(self, request, pk: int):
        order = order_for_viewer(pk=pk, token=request.headers.get("X-Order-Token"), user=request.user)
        data = DisputeOpenSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dispute = services.dispute_open(
            order_pk=order.pk,
            reason=data.validated_data["reason"],
            statement=data.validated_data["statement"],
            key_pks=data.validated_data.get("keys"),
            now=timezone.now(),
            actor=request.user,
        )
        return Response(
            {
                "id": dispute.pk,
                "status": dispute.status,
                "deadline": serializers.DateTimeField().to_representation(dispute.deadline),
            },
            status=status.HTTP_201_CREATED,
        )


class DisputeDetail(APIView):
    authentication_classes = PARTIES

    @extend_schema(
        parameters=[ORDER_TOKEN],
        responses={200: DisputeSerializer, **error_responses({403: ["permission_denied"], 404: ["not_found"]})},
    )
    def get(self, request, pk: int):
        dispute, _role = _viewer(request, pk)
        dispute = Dispute.objects.prefetch_related("messages", "keys").get(pk=dispute.pk)
        return Response(DisputeSerializer(dispute).data)


class MessageSerializer(serializers.Serializer):
    body = serializers.CharField(max_length=STATEMENT_MAX_LENGTH)
    question_for = serializers.ChoiceField(
        choices=[MessageRole.BUYER, MessageRole.MERCHANT],
        required=False,
        help_text="Staff only: a question to this party, restarting their clock.",
    )


class DisputeMessageCreate(APIView):
    authentication_classes = PARTIES

    @extend_schema(
        parameters=[ORDER_TOKEN],
        request=MessageSerializer,
        responses={
            201: DisputeMessageSerializer,
            **error_responses(
                {
                    400: ["invalid", "too_long", "bad_question"],
                    403: ["permission_denied"],
                    404: ["not_found"],
                    409: ["bad_state"],
                }
            ),
        },
    )
    def post(self, request, pk: int):
        dispute, role = _viewer(request, pk)
        data = MessageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.dispute_message_post(
            dispute_pk=dispute.pk,
            role=role,
            body=data.validated_data["body"],
            question_for=data.validated_data.get("question_for", ""),
            author=request.user,
            now=timezone.now(),
        )
        return Response(DisputeMessageSerializer(message).data, status=status.HTTP_201_CREATED)


BUYER_ACTION_SCHEMA = extend_schema(
    parameters=[ORDER_TOKEN],
    request=None,
    responses={200: StatusSerializer, **error_responses({403: ["permission_denied"], **STATE_ERRORS})},
)


class DisputeAccept(APIView):
    authentication_classes = PARTIES

    @BUYER_ACTION_SCHEMA
    def post(self, request, pk: int):
        dispute = _as_buyer(request, pk)
        return _status(services.dispute_accept(dispute_pk=dispute.pk, now=timezone.now(), actor=request.user))


class DisputeEscalate(APIView):
    authentication_classes = PARTIES

    @BUYER_ACTION_SCHEMA
    def post(self, request, pk: int):
        dispute = _as_buyer(request, pk)
        return _status(services.dispute_escalate(dispute_pk=dispute.pk, now=timezone.now(), actor=request.user))


class StatementSerializer(serializers.Serializer):
    statement = serializers.CharField(max_length=STATEMENT_MAX_LENGTH)


class DisputeReopen(APIView):
    """The replacement does not work either: back to the merchant, once per dispute."""

    authentication_classes = PARTIES

    @extend_schema(
        parameters=[ORDER_TOKEN],
        request=StatementSerializer,
        responses={
            200: StatusSerializer,
            **error_responses(
                {
                    400: ["invalid"],
                    403: ["permission_denied"],
                    404: ["not_found"],
                    409: ["bad_state", "reopened_already"],
                }
            ),
        },
    )
    def post(self, request, pk: int):
        dispute = _as_buyer(request, pk)
        data = StatementSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _status(
            services.dispute_reopen(
                dispute_pk=dispute.pk,
                statement=data.validated_data["statement"],
                now=timezone.now(),
                actor=request.user,
            )
        )


# --- the merchant -------------------------------------------------------------------------------------


class MerchantDisputeSerializer(DisputeSerializer):
    class Meta(DisputeSerializer.Meta):
        fields = [f for f in DisputeSerializer.Meta.fields if f != "messages"]


@extend_schema_view(
    get=extend_schema(responses={200: MerchantDisputeSerializer(many=True), **error_responses(MERCHANT_ACCESS)})
)
class MerchantDisputeList(generics.ListAPIView):
    authentication_classes = [MerchantTokenAuthentication, SessionAuthentication]
    permission_classes = [IsApprovedMerchant, ScopeRequired]
    throttle_classes = [TokenAndAddressThrottle]
    required_scopes = {"GET": "orders"}  # a merchant token's scope (core.scopes)
    serializer_class = MerchantDisputeSerializer

    def get_queryset(self):
        return selectors.disputes_of_merchant(merchant=self.request.merchant).prefetch_related("keys")


class _MerchantAction(APIView):
    authentication_classes = [MerchantTokenAuthentication, SessionAuthentication]
    permission_classes = [IsApprovedMerchant, ScopeRequired]
    throttle_classes = [TokenAndAddressThrottle]
    required_scopes = {"POST": "orders"}  # a merchant token's scope (core.scopes)

    def dispute(self, pk: int) -> Dispute:
        dispute = selectors.disputes_of_merchant(merchant=self.request.merchant).filter(pk=pk).first()
        if dispute is None:
            raise exceptions.NotFound
        return dispute


MERCHANT_ERRORS = {**MERCHANT_ACCESS, **STATE_ERRORS}


class MerchantDisputeReplace(_MerchantAction):
    @extend_schema(
        request=None,
        responses={200: StatusSerializer, **error_responses({**MERCHANT_ERRORS, 409: ["bad_state", "out_of_stock"]})},
    )
    def post(self, request, pk: int):
        dispute = self.dispute(pk)
        return _status(services.dispute_replace(dispute_pk=dispute.pk, now=timezone.now(), actor=request.user))


class RefundSerializer(serializers.Serializer):
    full = serializers.BooleanField(default=False, help_text="Refund the whole order, not only the disputed keys.")


class MerchantDisputeRefund(_MerchantAction):
    @extend_schema(request=RefundSerializer, responses={200: StatusSerializer, **error_responses(MERCHANT_ERRORS)})
    def post(self, request, pk: int):
        dispute = self.dispute(pk)
        data = RefundSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _status(
            services.dispute_refund(
                dispute_pk=dispute.pk, full=data.validated_data["full"], now=timezone.now(), actor=request.user
            )
        )


class MerchantDisputeContest(_MerchantAction):
    @extend_schema(
        request=StatementSerializer,
        responses={200: StatusSerializer, **error_responses({**MERCHANT_ERRORS, 400: ["invalid", "too_long"]})},
    )
    def post(self, request, pk: int):
        dispute = self.dispute(pk)
        data = StatementSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _status(
            services.dispute_contest(
                dispute_pk=dispute.pk,
                statement=data.validated_data["statement"],
                now=timezone.now(),
                actor=request.user,
            )
        )


# --- staff ------------------------------------------------------------------------------------------------


class IsVerifiedStaff(permissions.BasePermission):
    """Staff with a staff API token, or a session that passed the second factor."""

    message = _("Only staff with a verified two-factor session (or a staff API token) may decide disputes.")

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not user or not user.is_authenticated or not user.is_staff:
            return False
        return isinstance(request.successful_authenticator, StaffTokenAuthentication) or user.is_verified()


class DecisionSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=["refund", "release", "split"])
    buyer_percent = serializers.IntegerField(min_value=0, max_value=100, required=False)
    reason = serializers.CharField(max_length=STATEMENT_MAX_LENGTH)

    def validate(self, attrs):
        if attrs["outcome"] == "split" and "buyer_percent" not in attrs:
            raise serializers.ValidationError({"buyer_percent": [_("A split needs the buyer's percentage.")]})
        return attrs


class StaffDisputeDecide(APIView):
    authentication_classes = [StaffTokenAuthentication, SessionAuthentication]
    permission_classes = [IsVerifiedStaff]

    @extend_schema(
        request=DecisionSerializer,
        responses={
            200: StatusSerializer,
            **error_responses({400: ["invalid"], **ACCESS_ERRORS, 404: ["not_found"], 409: ["bad_state"]}),
        },
    )
    def post(self, request, pk: int):
        if not Dispute.objects.filter(pk=pk).exists():
            raise exceptions.NotFound
        data = DecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dispute = services.dispute_decide(
            dispute_pk=pk,
            outcome=data.validated_data["outcome"],
            buyer_percent=data.validated_data.get("buyer_percent"),
            reason=data.validated_data["reason"],
            now=timezone.now(),
            actor=request.user,
        )
        return _status(dispute)


class QueuedDisputeSerializer(MerchantDisputeSerializer):
    is_overdue = serializers.BooleanField(help_text="Past the published arbitration deadline.")

    class Meta(MerchantDisputeSerializer.Meta):
        fields = [*MerchantDisputeSerializer.Meta.fields, "is_overdue"]


@extend_schema_view(
    get=extend_schema(responses={200: QueuedDisputeSerializer(many=True), **error_responses(ACCESS_ERRORS)})
)
class StaffDisputeQueue(generics.ListAPIView):
    """Escalated disputes, closest to the arbitration deadline first; overdue ones are flagged."""

    authentication_classes = [StaffTokenAuthentication, SessionAuthentication]
    permission_classes = [IsVerifiedStaff]
    serializer_class = QueuedDisputeSerializer

    def get_queryset(self):
        return selectors.disputes_arbitration_queue(now=timezone.now()).prefetch_related("keys")
