from django.urls import path

from disputes import staff_views

app_name = "staff_disputes"

urlpatterns = [
    path("", staff_views.staff_dispute_queue, name="queue"),
    path("<int:pk>/", staff_views.staff_dispute_detail, name="detail"),
    path("<int:pk>/decide/", staff_views.staff_dispute_decide, name="decide"),
    path("<int:pk>/ask/", staff_views.staff_dispute_ask, name="ask"),
    path("<int:pk>/evidence.zip", staff_views.staff_dispute_evidence, name="evidence"),
]
