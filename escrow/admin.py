from django.contrib import admin

from escrow.models import KeyReveal, LedgerAccount, Order, Payment, Transfer, WebhookEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money and evidence are changed by services only; staff read them here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("pk", "product", "quantity", "amount", "currency", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("pk", "email")
    exclude = ("access_token_hash",)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("payment_id", "order", "amount", "currency", "status", "created_at")
    list_filter = ("status", "gateway")


admin.site.register(WebhookEvent, ReadOnlyAdmin)
admin.site.register(KeyReveal, ReadOnlyAdmin)
admin.site.register(LedgerAccount, ReadOnlyAdmin)
admin.site.register(Transfer, ReadOnlyAdmin)
