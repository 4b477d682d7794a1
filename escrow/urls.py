from django.urls import path

from escrow import staff_views, views

app_name = "escrow"

urlpatterns = [
    path("products/<int:pk>/", views.product_page, name="product"),
    path("products/<int:product_pk>/checkout/", views.checkout, name="checkout"),
    path("orders/", views.my_orders, name="my_orders"),
    path("orders/lookup/", views.order_lookup, name="order_lookup"),
    path("orders/<int:pk>/", views.order_page, name="order"),
    path("orders/<int:pk>/status/", views.order_status, name="order_status"),
    path("orders/<int:pk>/keys/", views.order_keys, name="order_keys"),
    path("orders/<int:pk>/confirm/", views.order_confirm, name="order_confirm"),
    path("orders/<int:pk>/pay-again/", views.order_pay_again, name="order_pay_again"),
    # A guest reaches their order by the secret token in its link.
    path("orders/<int:pk>/t/<str:token>/", views.order_page, name="order_guest"),
    path("orders/<int:pk>/t/<str:token>/status/", views.order_status, name="order_status_guest"),
    path("orders/<int:pk>/t/<str:token>/keys/", views.order_keys, name="order_keys_guest"),
    path("orders/<int:pk>/t/<str:token>/confirm/", views.order_confirm, name="order_confirm_guest"),
    path("orders/<int:pk>/t/<str:token>/pay-again/", views.order_pay_again, name="order_pay_again_guest"),
    path("staff/orders/<int:pk>/refund/", staff_views.staff_refund, name="staff_refund"),
    path("staff/orders/<int:pk>/review/", staff_views.staff_order_review, name="staff_order_review"),
    path("staff/payments/", staff_views.staff_payments, name="staff_payments"),
    path("staff/withdrawals/<int:pk>/approve/", staff_views.staff_withdrawal_approve, name="staff_withdrawal_approve"),
]
