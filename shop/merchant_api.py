"""The merchant API: `Authorization: Token <token>` (or a merchant's session). Everything is scoped to
the caller's merchant; another merchant's ids answer 404."""

from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import exceptions, generics, permissions, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import error_responses
from core.money import to_major
from shop import selectors, services
from shop.authentication import MerchantTokenAuthentication
from shop.models import Merchant, Product, StockDelimiter, StockUpload, StockUploadSource

# What any merchant endpoint can answer before the view runs.
ACCESS_ERRORS = {401: ["not_authenticated", "authentication_failed"], 403: ["permission_denied"]}

# The token first: a refused token then answers 401 with `WWW-Authenticate: Token`, not 403.
AUTHENTICATION = [MerchantTokenAuthentication, SessionAuthentication]


class IsApprovedMerchant(permissions.BasePermission):
    message = "Only an approved merchant may use this."

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        merchant = Merchant.objects.filter(user=request.user).first()
        if merchant is None or not merchant.is_approved:
            return False
        # A session is the merchant area's: it must have passed the second factor like the pages do.
        # A token needs none (it was made in that area).
        if isinstance(request.successful_authenticator, SessionAuthentication) and not request.user.is_verified():
            self.message = _("Confirm your sign-in with a code from your authenticator app, or use an API token.")
            return False
        request.merchant = merchant
        return True


StockCountsSerializer = inline_serializer(
    "StockCounts",
    {name: serializers.IntegerField() for name in ("available", "reserved", "sold", "revoked")},
)


class MerchantProductSerializer(serializers.ModelSerializer):
    price = serializers.SerializerMethodField()
    stock = serializers.SerializerMethodField()
    # The category's slug ("" without one): a string, as when categories were free text.
    category = serializers.SerializerMethodField()

    class Meta:
        model = Product
        fields = ["id", "title", "status", "price", "currency", "category", "low_stock_threshold", "stock"]

    def get_price(self, product: Product) -> str:
        return to_major(product.price, product.currency)

    def get_category(self, product: Product) -> str:
        return product.category.slug if product.category else ""

    @extend_schema_field(StockCountsSerializer)
    def get_stock(self, product: Product) -> dict:
        return {
            "available": product.available,
            "reserved": product.reserved,
            "sold": product.sold,
            "revoked": product.revoked,
        }


class StockUploadSerializer(serializers.ModelSerializer):
    class Meta:
        model = StockUpload
        fields = [
            "id",
            "product",
            "status",
            "total",
            "processed",
            "imported",
            "duplicates",
            "rejected",
            "error",
            "created_at",
            "finished_at",
        ]


@extend_schema_view(
    get=extend_schema(responses={200: MerchantProductSerializer(many=True), **error_responses(ACCESS_ERRORS)})
)
class MerchantProductList(generics.ListAPIView):
    authentication_classes = AUTHENTICATION
    permission_classes = [IsApprovedMerchant]
    serializer_class = MerchantProductSerializer

    def get_queryset(self):
        return selectors.merchant_products_with_stock(merchant=self.request.merchant)


class StockUploadCreate(APIView):
    """Send keys as a `text/plain` body, or as a multipart `file` field; `?delimiter=` as on the web page."""

    authentication_classes = AUTHENTICATION
    permission_classes = [IsApprovedMerchant]
    parser_classes = [MultiPartParser]

    @extend_schema(
        request={
            "text/plain": str,
            "multipart/form-data": inline_serializer("StockFile", {"file": serializers.FileField()}),
        },
        parameters=[OpenApiParameter("delimiter", enum=StockDelimiter.values, required=False)],
        responses={
            202: StockUploadSerializer,
            **error_responses(
                {
                    **ACCESS_ERRORS,
                    400: [
                        "invalid",
                        "not_approved",
                        "invalid_delimiter",
                        "invalid_file_type",
                        "too_large",
                        "too_many_lines",
                        "empty_file",
                        "binary_file",
                        "not_text",
                    ],
                    404: ["not_found"],
                }
            ),
        },
    )
    def post(self, request, pk: int):
        delimiter = request.query_params.get("delimiter", StockDelimiter.NEWLINE)
        if request.content_type.startswith("multipart/form-data"):
            upload_file = request.FILES.get("file")
            if upload_file is None:
                raise exceptions.ValidationError({"file": "Send the keys in a multipart field named 'file'."})
            delimiter = request.data.get("delimiter", delimiter)
            chunks, source, name = upload_file.chunks(), StockUploadSource.FILE, upload_file.name
        else:
            # The raw body, streamed: never parsed, never held whole in memory.
            stream = request._request
            chunks, source, name = iter(lambda: stream.read(1 << 20), b""), StockUploadSource.API, ""
        upload = services.stock_upload_start(
            merchant=request.merchant,
            product_pk=pk,
            chunks=chunks,
            source=source,
            delimiter=delimiter,
            original_name=name,
            actor=request.user,
            now=timezone.now(),
        )
        return Response(StockUploadSerializer(upload).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    get=extend_schema(responses={200: StockUploadSerializer, **error_responses({**ACCESS_ERRORS, 404: ["not_found"]})})
)
class StockUploadDetail(generics.RetrieveAPIView):
    authentication_classes = AUTHENTICATION
    permission_classes = [IsApprovedMerchant]
    serializer_class = StockUploadSerializer

    def get_queryset(self):
        return selectors.merchant_uploads(merchant=self.request.merchant)
