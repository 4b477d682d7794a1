"""The merchant API: `Authorization: Token <token>` (or a merchant's verified session). Everything is
scoped to the caller's merchant; another merchant's ids answer 404. Each view names the token scope
each method needs (`required_scopes`, checked by `core.scopes.ScopeRequired`); each is limited per
token and per client IP (`core.throttling.TokenAndAddressThrottle`); lists are cursor-paginated; the
POSTs that change stock honour `Idempotency-Key` (`core.idempotency`). Money and orders are escrow's
(`escrow/merchant_api.py`): shop knows nothing of them."""

import hashlib
import tempfile

from django.conf import settings
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

from core.api import error_responses, errors_merge
from core.idempotency import idempotent
from core.money import Currency, MoneyError, from_major, to_major
from core.pagination import NewestFirstCursor
from core.scopes import ScopeRequired
from core.throttling import TokenAndAddressThrottle
from shop import selectors, services
from shop.authentication import MerchantTokenAuthentication
from shop.models import (
    DESCRIPTION_MAX_LENGTH,
    ApiScope,
    Merchant,
    MerchantApiToken,
    Product,
    ProductStatus,
    StockDelimiter,
    StockUpload,
    StockUploadSource,
)

# What any merchant endpoint can answer before the view runs (the disputes API uses it too).
ACCESS_ERRORS = {401: ["not_authenticated", "authentication_failed"], 403: ["permission_denied"]}
# ... and for the views below, which also check the token's scope and the rate limits.
MERCHANT_ACCESS_ERRORS = {**ACCESS_ERRORS, 403: ["permission_denied", "scope"], 429: ["throttled"]}
IDEMPOTENCY_ERRORS = {400: ["bad_idempotency_key"], 409: ["idempotency_in_progress"], 422: ["idempotency_mismatch"]}
EVERY_SCOPE = tuple(ApiScope.values)

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


class MerchantApi:
    """What every merchant API view shares: who may call, the scopes, the limits, the pages."""

    authentication_classes = AUTHENTICATION
    permission_classes = [IsApprovedMerchant, ScopeRequired]
    throttle_classes = [TokenAndAddressThrottle]
    pagination_class = NewestFirstCursor
    required_scopes: dict = {}


def merchant_errors(*more: dict) -> dict:
    """The error entries of a merchant operation: access, scope and limits, plus its own."""
    return error_responses(errors_merge(MERCHANT_ACCESS_ERRORS, *more))


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


class MerchantProductDetailSerializer(MerchantProductSerializer):
    class Meta(MerchantProductSerializer.Meta):
        fields = [
            *MerchantProductSerializer.Meta.fields,
            "description",
            "inspection_hours",
            "max_per_order",
            "created_at",
        ]


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


PRODUCT_ERRORS = {400: ["invalid", "bad_title", "bad_price", "description_too_long"]}


class ProductWriteSerializer(serializers.Serializer):
    """A product's listing as the API takes it: `price` a decimal string in major units."""

    title = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=DESCRIPTION_MAX_LENGTH, required=False, allow_blank=True)
    price = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0, coerce_to_string=True)
    currency = serializers.ChoiceField(choices=Currency.choices)
    category = serializers.CharField(max_length=64, required=False, allow_blank=True)
    inspection_hours = serializers.IntegerField(min_value=1, max_value=720, required=False)
    max_per_order = serializers.IntegerField(min_value=1, required=False)
    low_stock_threshold = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    status = serializers.ChoiceField(choices=ProductStatus.choices, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The shop's own ceiling (checkout enforces it too), as on the merchant area's form.
        self.fields["max_per_order"] = serializers.IntegerField(
            min_value=1, max_value=settings.ORDER_MAX_QUANTITY, required=False
        )

    def product_fields(self, *, product: Product | None = None) -> dict:
        """The validated fields as the services take them (`price` in minor units)."""
        fields = dict(self.validated_data)
        fields.pop("status", None)
        if "price" in fields or "currency" in fields:
            currency = fields.get("currency") or product.currency
            price = fields.get("price")
            if price is None:
                price_minor = product.price
                if currency != product.currency:
                    raise exceptions.ValidationError(
                        {"price": [_("Give the price with a new currency.")]}, code="bad_price"
                    )
            else:
                try:
                    price_minor = from_major(str(price), currency)
                except MoneyError:
                    raise exceptions.ValidationError(
                        {"price": [_("Too many decimal places for this currency.")]}, code="bad_price"
                    ) from None
            if price_minor <= 0:
                raise exceptions.ValidationError({"price": [_("A price is above zero.")]}, code="bad_price")
            fields["price"], fields["currency"] = price_minor, currency
        return fields


def _product_answer(merchant: Merchant, pk: int, code: int = 200) -> Response:
    product = selectors.merchant_products_with_stock(merchant=merchant).get(pk=pk)
    return Response(MerchantProductDetailSerializer(product).data, status=code)


@extend_schema_view(
    get=extend_schema(responses={200: MerchantProductSerializer(many=True), **merchant_errors()}),
    post=extend_schema(
        request=ProductWriteSerializer,
        responses={201: MerchantProductDetailSerializer, **merchant_errors(PRODUCT_ERRORS, IDEMPOTENCY_ERRORS)},
    ),
)
class MerchantProductList(MerchantApi, generics.ListAPIView):
    """The merchant's products with their stock counts (GET), or list a new one (POST; `status` may
    be `paused` to list it off sale)."""

    serializer_class = MerchantProductSerializer
    required_scopes = {"GET": ApiScope.READ, "POST": ApiScope.STOCK}

    def get_queryset(self):
        return selectors.merchant_products_with_stock(merchant=self.request.merchant)

    @idempotent
    def post(self, request):
        data = ProductWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.product_fields()
        product = services.product_create(merchant=request.merchant, now=timezone.now(), **fields)
        if data.validated_data.get("status") == ProductStatus.PAUSED:
            services.product_pause(product=product, actor=request.user, now=timezone.now())
        return _product_answer(request.merchant, product.pk, status.HTTP_201_CREATED)


class MerchantProductDetail(MerchantApi, APIView):
    """One product (GET); change its listing, or pause (`"status": "paused"`) and resume
    (`"status": "active"`) it (PATCH: only the fields sent change; its stock stays)."""

    required_scopes = {"GET": ApiScope.READ, "PATCH": ApiScope.STOCK}

    def _product(self, request, pk: int) -> Product:
        product = selectors.merchant_product(merchant=request.merchant, pk=pk)
        if product is None:
            raise exceptions.NotFound
        return product

    @extend_schema(responses={200: MerchantProductDetailSerializer, **merchant_errors({404: ["not_found"]})})
    def get(self, request, pk: int):
        return _product_answer(request.merchant, self._product(request, pk).pk)

    @extend_schema(
        request=ProductWriteSerializer(partial=True),
        responses={
            200: MerchantProductDetailSerializer,
            **merchant_errors(PRODUCT_ERRORS, {400: ["bad_status"], 404: ["not_found"], 409: ["bad_state"]}),
        },
    )
    def patch(self, request, pk: int):
        product = self._product(request, pk)
        data = ProductWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.product_edit(
            product=product,
            actor=request.user,
            now=timezone.now(),
            status=data.validated_data.get("status"),
            **data.product_fields(product=product),
        )
        return _product_answer(request.merchant, product.pk)


class KeysRevokeSerializer(serializers.Serializer):
    keys = serializers.ListField(
        child=serializers.CharField(max_length=services.MAX_KEY_LENGTH, trim_whitespace=False),
        required=False,
        allow_empty=False,
        max_length=10_000,
        help_text="The keys to take off sale (as uploaded). Without it, every unsold key of the product.",
    )


class MerchantProductRevoke(MerchantApi, APIView):
    """Take unsold keys off sale: those listed, or all of them. Reserved and sold keys are left alone;
    a revoked key never sells."""

    required_scopes = {"POST": ApiScope.STOCK}

    @extend_schema(
        request=KeysRevokeSerializer,
        responses={
            200: inline_serializer("KeysRevoked", {"revoked": serializers.IntegerField()}),
            **merchant_errors({400: ["invalid", "no_keys"], 404: ["not_found"]}, IDEMPOTENCY_ERRORS),
        },
    )
    @idempotent
    def post(self, request, pk: int):
        product = selectors.merchant_product(merchant=request.merchant, pk=pk)
        if product is None:
            raise exceptions.NotFound
        data = KeysRevokeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        revoked = services.keys_revoke(
            product=product, actor=request.user, now=timezone.now(), keys=data.validated_data.get("keys")
        )
        return Response({"revoked": revoked})


def _stock_upload_fingerprint(request) -> str:
    """What "the same upload" is: the path, the delimiter and the file's bytes. A text body is spooled
    (to disk past 1 MiB, at most one byte past the size limit, which the service then refuses) while
    it is hashed, and the view reads it back from there."""
    digest = hashlib.sha256(f"{request.method} {request.get_full_path()}\n".encode())
    if request.content_type.startswith("multipart/form-data"):
        digest.update(str(request.data.get("delimiter", "")).encode() + b"\n")
        upload_file = request.FILES.get("file")
        if upload_file is not None:
            digest.update(upload_file.name.encode() + b"\n")
            for chunk in upload_file.chunks():
                digest.update(chunk)
            upload_file.seek(0)
        return digest.hexdigest()
    spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 - closed with the request
    left = settings.SHOP_STOCK_UPLOAD_MAX_BYTES + 1
    stream = request._request
    while left > 0:
        chunk = stream.read(min(1 << 20, left))
        if not chunk:
            break
        digest.update(chunk)
        spool.write(chunk)
        left -= len(chunk)
    spool.seek(0)
    request._request.stock_body = spool
    return digest.hexdigest()


class StockUploadCreate(MerchantApi, APIView):
    """Send keys as a `text/plain` body, or as a multipart `file` field; `?delimiter=` as on the web page."""

    parser_classes = [MultiPartParser]
    required_scopes = {"POST": ApiScope.STOCK}

    @extend_schema(
        request={
            "text/plain": str,
            "multipart/form-data": inline_serializer("StockFile", {"file": serializers.FileField()}),
        },
        parameters=[OpenApiParameter("delimiter", enum=StockDelimiter.values, required=False)],
        responses={
            202: StockUploadSerializer,
            **merchant_errors(
                {
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
                    415: ["unsupported_media_type"],
                },
                IDEMPOTENCY_ERRORS,
            ),
        },
    )
    @idempotent(fingerprint=_stock_upload_fingerprint)
    def post(self, request, pk: int):
        delimiter = request.query_params.get("delimiter", StockDelimiter.NEWLINE)
        if request.content_type.startswith("multipart/form-data"):
            upload_file = request.FILES.get("file")
            if upload_file is None:
                raise exceptions.ValidationError({"file": "Send the keys in a multipart field named 'file'."})
            delimiter = request.data.get("delimiter", delimiter)
            chunks, source, name = upload_file.chunks(), StockUploadSource.FILE, upload_file.name
        else:
            # The raw body, streamed: never parsed, never held whole in memory (or its spooled copy,
            # when an Idempotency-Key had it hashed first).
            stream = getattr(request._request, "stock_body", None) or request._request
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


@extend_schema_view(get=extend_schema(responses={200: StockUploadSerializer, **merchant_errors({404: ["not_found"]})}))
class StockUploadDetail(MerchantApi, generics.RetrieveAPIView):
    """How an upload's import is going."""

    serializer_class = StockUploadSerializer
    required_scopes = {"GET": ApiScope.STOCK}

    def get_queryset(self):
        return selectors.merchant_uploads(merchant=self.request.merchant)


# --- tokens --------------------------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer):
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiScope.choices))
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = MerchantApiToken
        fields = ["id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at", "is_active"]


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiScope.choices), allow_empty=False, max_length=len(ApiScope.values)
    )
    otp = serializers.CharField(max_length=16, help_text="A fresh code from the authenticator app (or a backup code).")


class MerchantTokenList(MerchantApi, generics.ListAPIView):
    """The merchant's API tokens (never their secrets), or a new one (its secret shown only in this
    answer). Managing tokens needs a token holding every scope (or a verified session); a new token
    also needs a fresh second-factor code."""

    serializer_class = ApiTokenSerializer
    required_scopes = {"GET": EVERY_SCOPE, "POST": EVERY_SCOPE}

    def get_queryset(self):
        return MerchantApiToken.objects.filter(merchant=self.request.merchant)

    @extend_schema(responses={200: ApiTokenSerializer(many=True), **merchant_errors()})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=ApiTokenCreateSerializer,
        responses={
            201: inline_serializer(
                "CreatedApiToken",
                {
                    "id": serializers.IntegerField(),
                    "token": serializers.CharField(help_text="Shown once: only its hash is kept."),
                    "scopes": serializers.ListField(child=serializers.ChoiceField(choices=ApiScope.choices)),
                    "name": serializers.CharField(),
                },
            ),
            **merchant_errors({400: ["invalid", "bad_scopes", "two_factor_required", "bad_code"]}),
        },
    )
    def post(self, request):
        data = ApiTokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        record, secret = services.merchant_api_token_create(
            merchant=request.merchant,
            name=data.validated_data["name"],
            scopes=data.validated_data["scopes"],
            actor=request.user,
            code=data.validated_data["otp"],
            now=timezone.now(),
        )
        return Response(
            {"id": record.pk, "token": secret, "scopes": record.scopes, "name": record.name},
            status=status.HTTP_201_CREATED,
        )


class MerchantTokenDetail(MerchantApi, APIView):
    required_scopes = {"DELETE": EVERY_SCOPE}

    @extend_schema(responses={204: None, **merchant_errors({404: ["not_found"]})})
    def delete(self, request, pk: int):
        """Revoke a token at once (revoking a revoked token changes nothing)."""
        token = MerchantApiToken.objects.filter(merchant=request.merchant, pk=pk).first()
        if token is None:
            raise exceptions.NotFound
        services.merchant_api_token_revoke(token=token, actor=request.user, now=timezone.now())
        return Response(status=status.HTTP_204_NO_CONTENT)
