from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django_otp.plugins.otp_static.models import StaticDevice as OtpStaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice as OtpTOTPDevice

from accounts.models import Alert, AuditEntry, User

admin.site.register(User, UserAdmin)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "action", "subject_type", "subject_id", "actor")
    list_filter = ("action", "subject_type")
    search_fields = ("subject_id", "action")

    # The trail is append-only: nobody edits or deletes it, not even staff.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "message", "acknowledged_at")
    list_filter = ("kind",)
    readonly_fields = ("key", "kind", "message", "data", "created_at", "acknowledged_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# django-otp's own TOTP and static devices keep their secrets in plaintext; the shop uses its own
# (accounts.AuthenticatorDevice, accounts.BackupCodeDevice), so staff must not create the old kind here.
for _model in (OtpTOTPDevice, OtpStaticDevice):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
