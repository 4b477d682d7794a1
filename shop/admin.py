from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core.money import MoneyError, from_major, money_column, to_major
from core.transitions import StateError
from shop import services
from shop.models import CardKey, Category, Coupon, Merchant, MerchantApiToken, MerchantKyc, Product, StockUpload


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
    readonly_fields = ("status", "rejection_reason", "rejected_at", "verified_at", "created_at")
    actions = ["approve", "reject"]

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "user") if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        """Through the services, like every other write: a new merchant gets its data key, and a change
        (the fee above all) leaves an audit row with the old and new values."""
        now = timezone.now()
        if not change:
            created = services.merchant_create(
                user=form.cleaned_data["user"], name=obj.name, contact=obj.contact, now=now
            )
            obj.pk = created.pk
        changed = set(form.changed_data) & services.MERCHANT_FIELDS
        if changed:
            services.merchant_update(
                merchant=Merchant(pk=obj.pk),
                actor=request.user,
                now=now,
                **{name: form.cleaned_data[name] for name in sorted(changed) if change or name == "fee_percent"},
            )
        obj.refresh_from_db()

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
        if self.instance.pk:  # bound too: `changed_data` compares the posted price with this
            self.initial["price"] = Decimal(to_major(self.instance.price, self.instance.currency))

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
    list_filter = ("status", "currency", "category")
    readonly_fields = (
        "status",
        "description_html",
        "price_tiers",
        "low_stock_notified_at",
        "review_reason",
        "review_requested_at",
        "reviewed_at",
        "review_note",
        "created_at",
    )

    # A product never moves to another merchant: its keys are sealed under its merchant's data key.
    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "merchant") if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        """Through the services: a price (or any listing field) changed here leaves an audit row with
        the old and new values, as a change from the merchant area does."""
        fields = {name: form.cleaned_data[name] for name in form.changed_data if name in services.PRODUCT_FIELDS}
        if change and fields:
            services.product_update(product=Product(pk=obj.pk), actor=request.user, now=timezone.now(), **fields)
        elif not change:
            rest = {name: value for name, value in fields.items() if name not in {"title", "price", "currency"}}
            created = services.product_create(
                merchant=form.cleaned_data["merchant"],
                title=form.cleaned_data["title"],
                price=form.cleaned_data["price"],
                currency=form.cleaned_data["currency"],
                now=timezone.now(),
                **rest,
            )
            obj.pk = created.pk
        obj.refresh_from_db()


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    """Staff define the catalogue's sections here; merchants pick one per product. A category that
    products use cannot be deleted (PROTECT): rename it or move its products first."""

    list_display = ("name", "name_zh_hans", "slug", "position", "is_sensitive")
    list_editable = ("position", "is_sensitive")
    prepopulated_fields = {"slug": ("name",)}
    search_fields = ("name", "name_zh_hans", "slug")


@admin.register(MerchantKyc)
class MerchantKycAdmin(admin.ModelAdmin):
    """Read-only, and never the document itself: staff open that from the staff console's merchant
    queue (`staff.views.kyc_document`), where each reading is audited."""

    list_display = ("merchant", "kind", "legal_name", "submitted_at", "document_deleted_at")
    list_filter = ("kind",)
    search_fields = ("legal_name", "merchant__name")
    exclude = ("document_name",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Coupon)
class CouponAdmin(admin.ModelAdmin):
    """Read-only: merchants make and switch off coupons in their area (through the services)."""

    list_display = ("code", "merchant", "product", "kind", "value", "currency", "uses", "max_uses", "is_active")
    list_filter = ("kind", "is_active")
    search_fields = ("code", "merchant__name")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
