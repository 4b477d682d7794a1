from django.urls import path

from disputes import views

app_name = "disputes"

urlpatterns = [
    path("orders/<int:pk>/dispute/", views.order_dispute, name="order_dispute"),
    # A guest opens, follows and answers the dispute by the order's secret token link.
    path("orders/<int:pk>/t/<str:token>/dispute/", views.order_dispute, name="order_dispute_guest"),
    path("orders/<int:order_pk>/t/<str:token>/dispute/<str:action>/", views.buyer_act, name="act_guest"),
    path(
        "orders/<int:order_pk>/t/<str:token>/dispute/files/<int:attachment_pk>/",
        views.attachment,
        name="attachment_guest",
    ),
    path("disputes/<int:pk>/", views.buyer_page, name="detail"),
    path("disputes/<int:pk>/files/<int:attachment_pk>/", views.attachment, name="attachment"),
    path("disputes/<int:pk>/<str:action>/", views.buyer_act, name="act"),
    path("inbox/", views.inbox, name="inbox"),
    path("inbox/<int:pk>/", views.inbox_open, name="inbox_open"),
]
