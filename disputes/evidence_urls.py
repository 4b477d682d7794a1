"""The parties' evidence downloads, mounted at the site root (their paths sit in the buyer's and the
merchant's areas; this module holds only these, so the dispute pages can live in their own)."""

from django.urls import path

from disputes import evidence_views

app_name = "dispute_evidence"

urlpatterns = [
    path("disputes/<int:pk>/evidence.zip", evidence_views.buyer_dispute_evidence, name="buyer"),
    path("orders/<int:pk>/t/<str:token>/dispute/evidence.zip", evidence_views.guest_dispute_evidence, name="guest"),
    path("merchant/disputes/<int:pk>/evidence.zip", evidence_views.merchant_dispute_evidence, name="merchant"),
]
