from django.urls import path

from staff import views

app_name = "staff"

urlpatterns = [
    path("", views.console, name="console"),
    path("queues/<slug:slug>/", views.queue_page, name="queue"),
    path("merchants/<int:pk>/approve/", views.merchant_approve, name="merchant_approve"),
    path("merchants/<int:pk>/reject/", views.merchant_reject, name="merchant_reject"),
    path("merchants/<int:pk>/kyc-document/", views.kyc_document, name="kyc_document"),
    path("products/<int:pk>/approve/", views.product_approve, name="product_approve"),
    path("products/<int:pk>/reject/", views.product_reject, name="product_reject"),
    path("withdrawals/<int:pk>/reject/", views.withdrawal_reject, name="withdrawal_reject"),
    path("alerts/<int:pk>/acknowledge/", views.alert_ack, name="alert_acknowledge"),
]
