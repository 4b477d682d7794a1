from django.contrib import admin, messages
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from config.transitions import StateError
from escrow import reviews, withdrawals
from escrow.models import (
    KeyReveal,
    LedgerAccount,
    LiabilityPublication,
    Order,
    Payment,
    PayoutAccount,
    Refund,
    ReserveHold,
    Transfer,
    WebhookEvent,
    Withdrawal,
)


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


# --- money lifecycle: staff decide withdrawals and refunds through services ---------------------------


@admin.action(description=_("Refund… (asks for a reason, shows which keys will be revoked)"))
def refund_order(modeladmin, request, queryset):
    """Refunds are decided one order at a time, on the staff refund page: never in bulk, never unexplained."""
    if queryset.count() != 1:
        modeladmin.message_user(request, _("Choose exactly one order to refund."), messages.WARNING)
        return None
    return redirect("escrow:staff_refund", pk=queryset.get().pk)


@admin.action(description=_("Approve held order (deliver)"))
def review_approve(modeladmin, request, queryset):
    for order in queryset.order_by("pk"):
        try:
            reviews.order_review_approve(order_pk=order.pk, staff=request.user, now=timezone.now())
        except reviews.ReviewRefused as error:
            modeladmin.message_user(request, f"{order}: {error}", messages.WARNING)
        else:
            modeladmin.message_user(request, _("%(order)s approved: it is being delivered.") % {"order": order})


@admin.action(description=_("Reject held order (refund what was paid)…"))
def review_reject(modeladmin, request, queryset):
    """A rejection refunds in full, so it asks for a reason on the review page, one order at a time."""
    if queryset.count() != 1:
        modeladmin.message_user(request, _("Choose exactly one order to reject."), messages.WARNING)
        return None
    return redirect("escrow:staff_order_review", pk=queryset.get().pk)


OrderAdmin.actions = [refund_order, review_approve, review_reject]


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdmin):
    list_display = ("pk", "merchant", "amount", "currency", "payout_account", "status", "requested_at", "decided_by")
    list_filter = ("status",)
    actions = ["approve", "reject"]

    @admin.action(description=_("Approve and mark paid"))
    def approve(self, request, queryset):
        self._decide(request, queryset, withdrawals.withdrawal_approve)

    @admin.action(description=_("Reject (the money returns to the merchant)"))
    def reject(self, request, queryset):
        self._decide(request, queryset, withdrawals.withdrawal_reject)

    def _decide(self, request, queryset, service):
        for withdrawal in queryset.order_by("pk"):
            try:
                service(withdrawal_pk=withdrawal.pk, staff=request.user, now=timezone.now())
            except StateError:
                self.message_user(request, _("%(w)s was already decided.") % {"w": withdrawal}, messages.WARNING)


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = (
        "pk",
        "order",
        "amount",
        "currency",
        "key_count",
        "key_disposition",
        "status",
        "reason",
        "created_at",
    )
    list_filter = ("status", "reason")


admin.site.register(PayoutAccount, ReadOnlyAdmin)
admin.site.register(ReserveHold, ReadOnlyAdmin)
admin.site.register(LiabilityPublication, ReadOnlyAdmin)
