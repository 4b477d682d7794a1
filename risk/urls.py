from django.urls import path

from risk import views

app_name = "risk"

urlpatterns = [
    path("rules/", views.rules_page, name="rules"),
    path("review/", views.review_queue_page, name="review_queue"),
]
