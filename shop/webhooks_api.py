"""The merchant API for webhooks: register, list, delete endpoints, rotate their secret, enable one that
was disabled, read the delivery log and resend. `Authorization: Token <token>` or the merchant's session;
another merchant's endpoint or delivery answers 404. Webhooks are the `orders` scope's."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import error_responses
from core.idempotency import idempotent
from core.scopes import ScopeRequired
from core.throttling import TokenAndAddressThrottle
from shop import services, webhook_selectors
from shop.merchant_api import AUTHENTICATION, MERCHANT_ACCESS_ERRORS, IsApprovedMerchant
from shop.models import ApiScope, WebhookDelivery, WebhookEndpoint, WebhookEventType

WEBHOOK_SCOPE = ApiScope.ORDERS
SCOPE_ERRORS = MERCHANT_ACCESS_ERRORS


# Webhooks tell of orders, disputes, stock and withdrawals: managing them takes the `orders` scope
# (core.scopes: a session holds every scope, a token without scopes none).
PERMISSIONS = [IsApprovedMerchant, ScopeRequired]
WEBHOOK_SCOPES = dict.fromkeys(("GET", "POST", "PATCH", "DELETE"), WEBHOOK_SCOPE)


class WebhookEndpointSerializer(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.ChoiceField(choices=WebhookEventType.values))

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "description", "status", "disabled_reason", "created_at"]


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(help_text="The signing secret, shown only in this answer.")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookEndpointListSerializer(serializers.Serializer):
    results = WebhookEndpointSerializer(many=True)


class WebhookEndpointCreateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=500, help_text="https in production; a public address.")
    events = serializers.ListField(child=serializers.ChoiceField(choices=WebhookEventType.values), allow_empty=False)
    description = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class WebhookSecretSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    secret = serializers.CharField(help_text="The new signing secret, shown only in this answer.")


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.CharField(source="event.public_id")
    event_type = serializers.CharField(source="event.type")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "last_response_code",
            "last_error",
            "last_attempt_at",
            "next_attempt_at",
            "created_at",
        ]


class WebhookDeliveryPageSerializer(serializers.Serializer):
    results = WebhookDeliverySerializer(many=True)
    next_before = serializers.IntegerField(
        allow_null=True, help_text="Pass as `before` for the next (older) page; null on the last page."
    )


class WebhookEndpointList(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = PERMISSIONS
    required_scopes = WEBHOOK_SCOPES
    throttle_classes = [TokenAndAddressThrottle]

    @extend_schema(
        operation_id="merchant_webhooks_list",
        responses={200: WebhookEndpointListSerializer, **error_responses(SCOPE_ERRORS)},
    )
    def get(self, request):
        endpoints = webhook_selectors.merchant_webhook_endpoints(merchant=request.merchant)
        return Response({"results": WebhookEndpointSerializer(endpoints, many=True).data})

    @extend_schema(
        operation_id="merchant_webhooks_create",
        request=WebhookEndpointCreateSerializer,
        responses={
            201: WebhookEndpointCreatedSerializer,
            **error_responses(
                {
                    **SCOPE_ERRORS,
                    400: [
                        "invalid",
                        "invalid_choice",
                        "webhook_events_invalid",
                        "webhook_url_invalid",
                        "webhook_url_https",
                        "webhook_url_private",
                        "webhook_url_unresolvable",
                    ],
                    409: ["webhook_endpoint_limit"],
                }
            ),
        },
    )
    @idempotent
    def post(self, request):
        given = WebhookEndpointCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_endpoint_create(
            merchant=request.merchant,
            url=given.validated_data["url"],
            events=given.validated_data["events"],
            description=given.validated_data["description"],
            now=timezone.now(),
        )
        body = {**WebhookEndpointSerializer(endpoint).data, "secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookEndpointDetail(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = PERMISSIONS
    required_scopes = WEBHOOK_SCOPES
    throttle_classes = [TokenAndAddressThrottle]

    @extend_schema(
        operation_id="merchant_webhook_get",
        responses={200: WebhookEndpointSerializer, **error_responses({**SCOPE_ERRORS, 404: ["not_found"]})},
    )
    def get(self, request, pk: int):
        endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        operation_id="merchant_webhook_delete",
        responses={204: None, **error_responses({**SCOPE_ERRORS, 404: ["not_found"]})},
    )
    def delete(self, request, pk: int):
        endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
        services.webhook_endpoint_delete(endpoint=endpoint, now=timezone.now())
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookSecretRotate(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = PERMISSIONS
    required_scopes = WEBHOOK_SCOPES
    throttle_classes = [TokenAndAddressThrottle]

    @extend_schema(
        operation_id="merchant_webhook_rotate_secret",
        request=None,
        responses={200: WebhookSecretSerializer, **error_responses({**SCOPE_ERRORS, 404: ["not_found"]})},
    )
    @idempotent
    def post(self, request, pk: int):
        endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
        secret = services.webhook_endpoint_secret_rotate(endpoint=endpoint, now=timezone.now())
        return Response({"id": endpoint.pk, "secret": secret})


class WebhookEndpointEnable(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = PERMISSIONS
    required_scopes = WEBHOOK_SCOPES
    throttle_classes = [TokenAndAddressThrottle]

    @extend_schema(
        operation_id="merchant_webhook_enable",
        request=None,
        responses={
            200: WebhookEndpointSerializer,
            **error_responses(
                {
                    **SCOPE_ERRORS,
                    400: [
                        "webhook_url_invalid",
                        "webhook_url_https",
                        "webhook_url_private",
                        "webhook_url_unresolvable",
                    ],
                    404: ["not_found"],
                    409: ["bad_state"],
                }
            ),
        },
    )
    @idempotent
    def post(self, request, pk: int):
        endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
        endpoint = services.webhook_endpoint_enable(endpoint=endpoint, now=timezone.now())
        return Response(WebhookEndpointSerializer(endpoint).data)


class WebhookDeliveryList(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = PERMISSIONS
    required_scopes = WEBHOOK_SCOPES
    throttle_classes = [TokenAndAddressThrottle]

    @extend_schema(
        operation_id="merchant_webhook_deliveries",
        parameters=[
            OpenApiParameter("before", int, required=False, description="Only deliveries with a smaller id."),
        ],
        responses={200: WebhookDeliveryPageSerializer, **error_responses({**SCOPE_ERRORS, 404: ["not_found"]})},
    )
    def get(self, request, pk: int):
        endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
        before = request.query_params.get("before")
        before = int(before) if before and before.isdigit() and len(before) < 19 else None
        page = webhook_selectors.DELIVERY_PAGE
        deliveries = webhook_selectors.endpoint_deliveries(endpoint=endpoint, before=before, limit=page + 1)
        more = len(deliveries) > page
        deliveries = deliveries[:page]
        return Response(
            {
                "results": WebhookDeliverySerializer(deliveries, many=True).data,
                "next_before": deliveries[-1].pk if more else None,
            }
        )


class WebhookDeliveryResend(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = PERMISSIONS
    required_scopes = WEBHOOK_SCOPES
    throttle_classes = [TokenAndAddressThrottle]

    @extend_schema(
        operation_id="merchant_webhook_delivery_resend",
        request=None,
        responses={
            202: WebhookDeliverySerializer,
            **error_responses({**SCOPE_ERRORS, 404: ["not_found"], 409: ["webhook_endpoint_disabled", "bad_state"]}),
        },
    )
    @idempotent
    def post(self, request, pk: int):
        delivery = webhook_selectors.merchant_webhook_delivery(merchant=request.merchant, pk=pk)
        delivery = services.webhook_delivery_resend(delivery=delivery, now=timezone.now())
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
