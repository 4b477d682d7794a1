from django.urls import path

from escrow.gateways.sandbox import views

app_name = "sandbox"

urlpatterns = [
    path("pay/<str:payment_id>/", views.pay, name="pay"),
    path("webhook/", views.webhook, name="webhook"),
]
