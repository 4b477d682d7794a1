from django.urls import path

from shop import merchant_views as views

app_name = "merchant"

urlpatterns = [
    # /merchant/ itself is the dashboard (escrow.merchant_views.dashboard, wired in config/urls.py).
    path("products/", views.products, name="products"),
    path("signup/", views.signup, name="signup"),
    path("signup/sent/", views.signup_sent, name="signup_sent"),
    path("status/", views.status, name="status"),
    path("products/new/", views.product_create, name="product_create"),
    path("products/<int:pk>/edit/", views.product_edit, name="product_edit"),
    path("products/<int:pk>/pause/", views.product_pause, name="product_pause"),
    path("products/<int:pk>/resume/", views.product_resume, name="product_resume"),
    path("products/<int:pk>/review/", views.product_review_request, name="product_review_request"),
    path("products/<int:pk>/stock/", views.product_stock, name="product_stock"),
    path("products/<int:pk>/revoke/", views.product_revoke, name="product_revoke"),
    path("products/<int:pk>/export/", views.product_export, name="product_export"),
    path("uploads/", views.uploads, name="uploads"),
    path("uploads/<int:pk>/", views.upload_detail, name="upload"),
    path("uploads/<int:pk>/status/", views.upload_status, name="upload_status"),
    path("uploads/<int:pk>/rejected.csv", views.upload_report, name="upload_report"),
    path("settings/", views.merchant_settings, name="settings"),
    path("coupons/", views.coupons, name="coupons"),
    path("coupons/<int:pk>/deactivate/", views.coupon_deactivate, name="coupon_deactivate"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
]
