from django.urls import path

from escrow import transparency_views

app_name = "transparency"

urlpatterns = [path("", transparency_views.transparency, name="index")]
