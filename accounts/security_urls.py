from django.urls import path

from accounts import security_views

app_name = "security"

urlpatterns = [
    path("", security_views.overview, name="overview"),
    path("verify/", security_views.verify, name="verify"),
    path("totp/", security_views.totp_enrol, name="totp_enrol"),
    path("backup-codes/", security_views.backup_codes_regenerate, name="backup_codes"),
]
