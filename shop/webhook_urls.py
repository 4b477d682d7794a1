from django.urls import path

from shop import webhook_views as views

app_name = "merchant_webhooks"

urlpatterns = [
    path("", views.endpoints, name="list"),
    path("<int:pk>/", views.endpoint_detail, name="detail"),
    path("<int:pk>/rotate-secret/", views.endpoint_rotate_secret, name="rotate_secret"),
    path("<int:pk>/enable/", views.endpoint_enable, name="enable"),
    path("<int:pk>/delete/", views.endpoint_delete, name="delete"),
    path("deliveries/<int:pk>/resend/", views.delivery_resend, name="resend"),
]
