from django.urls import path

from disputes import views_reputation as views

app_name = "reputation"

urlpatterns = [
    path("orders/<int:pk>/rate/", views.rating_page, name="rate"),
    path("orders/<int:pk>/t/<str:token>/rate/", views.rating_page, name="rate_guest"),
    path("merchants/<int:pk>/", views.merchant_page, name="merchant"),
    path("rules/", views.rules_page, name="rules"),
]
