from django.contrib import admin

from shop.models import CardKey, Merchant, Product


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "status", "created_at")
    list_filter = ("status",)
    exclude = ("data_key_wrapped", "data_key_version")
    readonly_fields = ("status", "created_at")


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("title", "merchant", "price", "currency", "status")
    list_filter = ("status", "currency")


@admin.register(CardKey)
class CardKeyAdmin(admin.ModelAdmin):
    """Shows where a key is, never what it is: the sealed value stays sealed."""

    list_display = ("pk", "product", "status", "order", "created_at")
    list_filter = ("status",)
    fields = ("product", "status", "order", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
