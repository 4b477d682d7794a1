from django.urls import path

from disputes import merchant_views

app_name = "merchant_disputes"

urlpatterns = [
    path("", merchant_views.dispute_list, name="list"),
    path("<int:pk>/", merchant_views.dispute_page, name="detail"),
    path("<int:pk>/<str:action>/", merchant_views.dispute_act, name="act"),
]
