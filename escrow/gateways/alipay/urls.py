from django.urls import path

from escrow.gateways.alipay import views

app_name = "alipay"

urlpatterns = [
    path("notify/", views.notify, name="notify"),
]
