from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers

from core.api import error_responses
from core.money import to_major
from core.sessionless import session_not_required
from shop.models import Product
from shop.selectors import CATALOG_SORTS, catalog_products, products_on_sale


class ProductSerializer(serializers.ModelSerializer):
    price = serializers.SerializerMethodField()
    stock = serializers.IntegerField()
    merchant = serializers.SerializerMethodField()

    class Meta:
        model = Product
        fields = ["id", "title", "price", "currency", "stock", "merchant"]

    def get_price(self, product: Product) -> str:
        return to_major(product.price, product.currency)

    def get_merchant(self, product: Product) -> dict:
        return {"id": product.merchant_id, "name": product.merchant.name}


class ProductDetailSerializer(ProductSerializer):
    class Meta(ProductSerializer.Meta):
        fields = [*ProductSerializer.Meta.fields, "description"]


CATALOG_PARAMETERS = [
    OpenApiParameter("q", str, description="Search titles and descriptions (full-text on PostgreSQL)."),
    OpenApiParameter("category", str, description="A category's slug."),
    OpenApiParameter("sort", str, enum=list(CATALOG_SORTS), description="Without it: by id (oldest first)."),
    OpenApiParameter("in_stock", bool, description="Only products with a key to sell."),
]


@method_decorator(session_not_required, name="dispatch")
@extend_schema_view(get=extend_schema(parameters=CATALOG_PARAMETERS))
class ProductList(generics.ListAPIView):
    """The catalogue, filtered as the catalogue page filters it (an unknown `sort` is ignored)."""

    serializer_class = ProductSerializer

    def get_queryset(self):
        params = self.request.query_params
        return catalog_products(
            q=params.get("q", ""),
            category=params.get("category", ""),
            sort=params.get("sort", ""),
            in_stock=params.get("in_stock", "").lower() in {"1", "true", "yes", "on"},
        )


@method_decorator(session_not_required, name="dispatch")
@extend_schema_view(
    get=extend_schema(responses={200: ProductDetailSerializer, **error_responses({404: ["not_found"]})})
)
class ProductDetail(generics.RetrieveAPIView):
    serializer_class = ProductDetailSerializer
    queryset = products_on_sale()
