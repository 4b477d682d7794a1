from django.urls import path

from escrow import merchant_views

app_name = "merchant_money"

urlpatterns = [
    path("", merchant_views.balance, name="balance"),
    path("withdrawals/", merchant_views.withdrawal_list, name="withdrawals"),
    path("payout-accounts/", merchant_views.payout_account_add, name="payout_account_add"),
    path("orders/<int:pk>/refund/", merchant_views.merchant_refund, name="refund"),
    path("proofs/<int:pk>/", merchant_views.proof_download, name="proof"),
]
