from django.urls import path

from accounts import security_views

app_name = "security"

urlpatterns = [
    path("", security_views.overview, name="overview"),
    path("verify/", security_views.verify, name="verify"),
    path("totp/", security_views.totp_enrol, name="totp_enrol"),
    path("backup-codes/", security_views.backup_codes_regenerate, name="backup_codes"),
    path("sessions/<str:public_id>/end/", security_views.session_end, name="session_end"),
    path("sessions/end-all/", security_views.sessions_end_all, name="sessions_end_all"),
    path("tokens/", security_views.token_create, name="token_create"),
    path("tokens/<int:pk>/revoke/", security_views.token_revoke, name="token_revoke"),
    path("language/", security_views.language_set, name="language"),
    path("activity.csv", security_views.activity_download, name="activity"),
]
