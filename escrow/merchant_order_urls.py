from django.urls import path

from escrow import merchant_views

app_name = "merchant_orders"

urlpatterns = [
    path("", merchant_views.order_list, name="list"),
    path("<int:pk>/", merchant_views.order_detail, name="detail"),
]
