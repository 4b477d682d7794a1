from django.urls import path

from shop import views

app_name = "shop"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("products/<int:pk>/", views.product_detail, name="product"),
]
