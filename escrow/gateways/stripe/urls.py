from django.urls import path

from escrow.gateways.stripe import views

app_name = "stripe"

urlpatterns = [
    path("pay/<str:payment_id>/", views.pay, name="pay"),
    path("webhook/", views.webhook, name="webhook"),
]
