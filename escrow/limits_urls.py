from django.urls import path

from escrow import limits_views

app_name = "limits"

urlpatterns = [path("", limits_views.spending_limits, name="spending")]
