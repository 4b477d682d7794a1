from django.urls import path

from escrow.gateways.epay import views

app_name = "epay"

urlpatterns = [
    path("notify/", views.notify, name="notify"),
]
