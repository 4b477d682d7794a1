"""Staff edit rules and the block list here; every save goes through risk.services, which audits it.
Decisions and review items are read-only (the review queue decides items)."""

from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from risk import services
from risk.models import BlockEntry, Decision, ReviewItem, Rule
from risk.signals import signal_is_known


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = ["event", "signal", "comparison", "threshold", "outcome", "is_active", "description"]
        help_texts = {"signal": _("e.g. count.checkout.device.10m, emails.device.1d, amount (see risk/README.md)")}

    def clean_signal(self) -> str:
        signal = self.cleaned_data["signal"].strip()
        if not signal_is_known(signal):
            raise forms.ValidationError(_("Unknown signal. See the list in risk/README.md."))
        return signal


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ["pk", "event", "signal", "comparison", "threshold", "outcome", "is_active", "description"]
    list_filter = ["event", "outcome", "is_active"]

    def save_model(self, request, obj, form, change):
        services.rule_save(rule=obj, actor=request.user, now=timezone.now())

    def delete_model(self, request, obj):
        services.rule_delete(rule=obj, actor=request.user, now=timezone.now())

    def delete_queryset(self, request, queryset):
        for rule in queryset:
            services.rule_delete(rule=rule, actor=request.user, now=timezone.now())


@admin.register(BlockEntry)
class BlockEntryAdmin(admin.ModelAdmin):
    list_display = ["pk", "kind", "value", "reason", "expires_at", "created_at"]
    list_filter = ["kind"]
    search_fields = ["value", "reason"]

    def save_model(self, request, obj, form, change):
        services.block_entry_save(entry=obj, actor=request.user, now=timezone.now())

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # expire an entry instead: the list keeps what was blocked and why


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Decision)
class DecisionAdmin(ReadOnly):
    list_display = ["pk", "at", "event", "outcome", "score", "rule", "subject_type", "subject_id", "actor"]
    list_filter = ["event", "outcome"]
    search_fields = ["actor", "email", "subject_id", "device"]


@admin.register(ReviewItem)
class ReviewItemAdmin(ReadOnly):
    list_display = ["pk", "kind", "subject_id", "email", "status", "created_at", "decided_at"]
    list_filter = ["kind", "status"]
