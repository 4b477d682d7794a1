from django import forms
from django.contrib import admin, messages
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core.money import MoneyError, from_major, money_column, to_major
from core.transitions import StateError
from shop import services
from shop.models import CardKey, Merchant, MerchantApiToken, Product, StockUpload


class RejectionForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason (the merchant sees it)"), widget=forms.Textarea(attrs={"rows": 4, "cols": 60})
    )


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "contact", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("name", "user__username", "contact")
    exclude = ("data_key_wrapped", "data_key_version")
    readonly_fields = ("status", "rejection_reason", "created_at")
    actions = ["approve", "reject"]

    @admin.action(description=gettext_lazy("Approve the selected merchants"))
    def approve(self, request, queryset):
        done = 0
        for merchant in queryset.order_by("pk"):
            try:
                services.merchant_approve(merchant=merchant, actor=request.user, now=timezone.now())
                done += 1
            except StateError:
                self.message_user(request, _("%(name)s is already approved.") % {"name": merchant}, messages.WARNING)
        if done:
            self.message_user(request, _("%(count)d merchants approved.") % {"count": done}, messages.SUCCESS)

    @admin.action(description=gettext_lazy("Reject the selected merchants (asks for a reason)"))
    def reject(self, request, queryset):
        form = RejectionForm(request.POST if "reason" in request.POST else None)
        if form.is_bound and form.is_valid():
            done = 0
            for merchant in queryset.order_by("pk"):
                try:
                    services.merchant_reject(
                        merchant=merchant, reason=form.cleaned_data["reason"], actor=request.user, now=timezone.now()
                    )
                    done += 1
                except StateError:
                    self.message_user(
                        request, _("%(name)s is not pending; not rejected.") % {"name": merchant}, messages.WARNING
                    )
            if done:
                self.message_user(request, _("%(count)d merchants rejected.") % {"count": done}, messages.SUCCESS)
            return None
        return render(
            request,
            "shop/admin_reject.html",
            {
                **self.admin_site.each_context(request),
                "form": form,
                "merchants": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "title": _("Reject merchants"),
            },
        )


class ProductAdminForm(forms.ModelForm):
    """The price in major units (`100.00` for ¥100.00), stored in minor units."""

    price = forms.DecimalField(label=gettext_lazy("Price"), min_value=0, decimal_places=2, max_digits=14)

    class Meta:
        model = Product
        fields = (
            "merchant",
            "title",
            "description",
            "price",
            "currency",
            "category",
            "inspection_hours",
            "max_per_order",
            "low_stock_threshold",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["price"] = to_major(self.instance.price, self.instance.currency)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("price") is not None and cleaned.get("currency"):
            try:
                cleaned["price"] = from_major(str(cleaned["price"]), cleaned["currency"])
            except MoneyError as error:
                self.add_error("price", str(error))
        return cleaned


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ("title", "merchant", money_column("price", label=gettext_lazy("price")), "status")
    list_filter = ("status", "currency")
    readonly_fields = ("status", "description_html", "low_stock_notified_at", "created_at")

    def get_readonly_fields(self, request, obj=None):
        # A product never moves to another merchant: its keys are sealed under its merchant's data key.
        return (*self.readonly_fields, "merchant") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        # Through the services, like a merchant's own edits: the description is bounded and rendered once.
        fields = {name: form.cleaned_data[name] for name in services.PRODUCT_FIELDS if name in form.cleaned_data}
        if change:
            changed = {name: value for name, value in fields.items() if name in form.changed_data}
            services.product_update(product=obj, actor=request.user, now=timezone.now(), **changed)
        else:
            created = services.product_create(
                merchant=form.cleaned_data["merchant"],
                title=fields.pop("title"),
                price=fields.pop("price"),
                currency=fields.pop("currency"),
                now=timezone.now(),
                **fields,
            )
            obj.pk = created.pk


@admin.register(StockUpload)
class StockUploadAdmin(admin.ModelAdmin):
    list_display = ("pk", "merchant", "product", "status", "total", "imported", "duplicates", "rejected", "created_at")
    list_filter = ("status",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # card keys name their upload without a database constraint


@admin.register(MerchantApiToken)
class MerchantApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "merchant", "prefix", "created_at", "last_used_at", "revoked_at")
    exclude = ("digest",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


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
