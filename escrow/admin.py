from django.contrib import admin, messages
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.money import money_column
from core.transitions import StateError
from escrow import reviews, withdrawals
from escrow.models import (
    DisputeAction,
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
    """Money and evidence are changed by services only; staff read them here.

    `money` lists (amount field, currency field) pairs: shown as `¥100.00 CNY` on the detail page in
    place of the stored minor units (list pages use `money_column` directly).
    """

    money: tuple[tuple[str, str], ...] = ()

    def get_exclude(self, request, obj=None):
        return [*(super().get_exclude(request, obj) or ()), *(field for field, _currency in self.money)]

    def get_readonly_fields(self, request, obj=None):
        columns = [money_column(field, currency_field=currency) for field, currency in self.money]
        return [*super().get_readonly_fields(request, obj), *columns]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("pk", "product", "quantity", money_column("amount"), "status", "created_at")
    money = (("unit_price", "currency"), ("amount", "currency"))
    list_filter = ("status",)
    search_fields = ("pk", "email")
    exclude = ("access_token_hash",)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "payment_id",
        "order",
        money_column("amount"),
        money_column("received_amount", currency_field="received_currency"),
        "status",
        "created_at",
    )
    money = (("amount", "currency"), ("received_amount", "received_currency"))
    list_filter = ("status", "gateway")


admin.site.register(WebhookEvent, ReadOnlyAdmin)
admin.site.register(KeyReveal, ReadOnlyAdmin)


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    BALANCES = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
    list_display = ("kind", "owner", *(money_column(name) for name in BALANCES))
    list_filter = ("kind", "currency")
    money = tuple((name, "currency") for name in BALANCES)


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = ("transfer_id", "kind", "code", money_column("amount"), "order", "created_at")
    list_filter = ("kind", "code")
    money = (("amount", "currency"),)


admin.site.register(DisputeAction, ReadOnlyAdmin)


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
    list_display = (
        "pk",
        "merchant",
        money_column("amount"),
        "payout_account",
        "status",
        "requested_at",
        "decided_by",
        "payout_reference",
    )
    list_filter = ("status",)
    actions = ["approve", "reject"]
    money = (("amount", "currency"),)

    @admin.action(description=_("Pay out… (shows the full payout details, asks for the payout reference)"))
    def approve(self, request, queryset):
        """Money leaves the platform: one withdrawal at a time, confirmed on its own page."""
        if queryset.count() != 1:
            self.message_user(request, _("Choose exactly one withdrawal to pay out."), messages.WARNING)
            return None
        return redirect("escrow:staff_withdrawal_approve", pk=queryset.get().pk)

    @admin.action(description=_("Reject (the money returns to the merchant)"))
    def reject(self, request, queryset):
        for withdrawal in queryset.order_by("pk"):
            try:
                withdrawals.withdrawal_reject(withdrawal_pk=withdrawal.pk, staff=request.user, now=timezone.now())
            except StateError:
                self.message_user(request, _("%(w)s was already decided.") % {"w": withdrawal}, messages.WARNING)


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = (
        "pk",
        "order",
        money_column("amount"),
        "key_count",
        "key_disposition",
        "status",
        "reason",
        "created_at",
    )
    list_filter = ("status", "reason")
    money = (("amount", "currency"),)


admin.site.register(PayoutAccount, ReadOnlyAdmin)


@admin.register(ReserveHold)
class ReserveHoldAdmin(ReadOnlyAdmin):
    list_display = ("order", "merchant", money_column("amount"), "release_at", "released_at")
    money = (("amount", "currency"),)


@admin.register(LiabilityPublication)
class LiabilityPublicationAdmin(ReadOnlyAdmin):
    list_display = ("currency", "root_hash", money_column("total"), money_column("funds_held"), "published_at")
    money = (("total", "currency"), ("funds_held", "currency"))
