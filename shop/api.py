from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers

from core.api import error_responses
from core.money import to_major
from shop.models import Product
from shop.selectors import products_on_sale


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


class ProductList(generics.ListAPIView):
    serializer_class = ProductSerializer
    queryset = products_on_sale()


@extend_schema_view(
    get=extend_schema(responses={200: ProductDetailSerializer, **error_responses({404: ["not_found"]})})
)
class ProductDetail(generics.RetrieveAPIView):
    serializer_class = ProductDetailSerializer
    queryset = products_on_sale()
