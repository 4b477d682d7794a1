from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from core import api as core_api
from disputes import api as disputes_api
from escrow import api as escrow_api
from escrow import merchant_api as escrow_merchant_api
from escrow.gateways import SANDBOX, gateway_enabled
from shop import api as shop_api
from shop import merchant_api as shop_merchant_api

api_v1 = [
    path("products/", shop_api.ProductList.as_view(), name="products"),
    path("products/<int:pk>/", shop_api.ProductDetail.as_view(), name="product"),
    path("orders/", escrow_api.OrderCreate.as_view(), name="orders"),
    path("orders/<int:pk>/", escrow_api.OrderDetail.as_view(), name="order"),
    path("orders/<int:pk>/keys/", escrow_api.OrderKeys.as_view(), name="order_keys"),
    path("orders/<int:pk>/confirm/", escrow_api.OrderConfirm.as_view(), name="order_confirm"),
    path("orders/<int:pk>/disputes/", disputes_api.DisputeOpen.as_view(), name="order_disputes"),
    path("disputes/<int:pk>/", disputes_api.DisputeDetail.as_view(), name="dispute"),
    path("disputes/<int:pk>/messages/", disputes_api.DisputeMessageCreate.as_view(), name="dispute_messages"),
    path("disputes/<int:pk>/accept/", disputes_api.DisputeAccept.as_view(), name="dispute_accept"),
    path("disputes/<int:pk>/escalate/", disputes_api.DisputeEscalate.as_view(), name="dispute_escalate"),
    path("disputes/<int:pk>/reopen/", disputes_api.DisputeReopen.as_view(), name="dispute_reopen"),
    path("merchant/disputes/", disputes_api.MerchantDisputeList.as_view(), name="merchant_disputes"),
    path(
        "merchant/disputes/<int:pk>/replace/",
        disputes_api.MerchantDisputeReplace.as_view(),
        name="merchant_dispute_replace",
    ),
    path(
        "merchant/disputes/<int:pk>/refund/",
        disputes_api.MerchantDisputeRefund.as_view(),
        name="merchant_dispute_refund",
    ),
    path(
        "merchant/disputes/<int:pk>/contest/",
        disputes_api.MerchantDisputeContest.as_view(),
        name="merchant_dispute_contest",
    ),
    path("staff/disputes/", disputes_api.StaffDisputeQueue.as_view(), name="staff_disputes"),
    path("staff/disputes/<int:pk>/decide/", disputes_api.StaffDisputeDecide.as_view(), name="staff_dispute_decide"),
    path("merchant/tokens/", shop_merchant_api.MerchantTokenList.as_view(), name="merchant_tokens"),
    path("merchant/tokens/<int:pk>/", shop_merchant_api.MerchantTokenDetail.as_view(), name="merchant_token"),
    path("merchant/products/", shop_merchant_api.MerchantProductList.as_view(), name="merchant_products"),
    path("merchant/products/<int:pk>/", shop_merchant_api.MerchantProductDetail.as_view(), name="merchant_product"),
    path(
        "merchant/products/<int:pk>/revoke/",
        shop_merchant_api.MerchantProductRevoke.as_view(),
        name="merchant_product_revoke",
    ),
    path("merchant/products/<int:pk>/stock/", shop_merchant_api.StockUploadCreate.as_view(), name="merchant_stock"),
    path("merchant/stock-uploads/<int:pk>/", shop_merchant_api.StockUploadDetail.as_view(), name="merchant_upload"),
    path("merchant/orders/", escrow_merchant_api.MerchantOrderList.as_view(), name="merchant_orders"),
    path("merchant/orders/<int:pk>/", escrow_merchant_api.MerchantOrderDetail.as_view(), name="merchant_order"),
    path(
        "merchant/orders/<int:pk>/refund/",
        escrow_merchant_api.MerchantOrderRefund.as_view(),
        name="merchant_order_refund",
    ),
    path("merchant/balance/", escrow_merchant_api.MerchantBalance.as_view(), name="merchant_balance"),
    path("merchant/statement/", escrow_merchant_api.MerchantStatement.as_view(), name="merchant_statement"),
    path(
        "merchant/payout-accounts/",
        escrow_merchant_api.MerchantPayoutAccounts.as_view(),
        name="merchant_payout_accounts",
    ),
    path("merchant/withdrawals/", escrow_merchant_api.MerchantWithdrawals.as_view(), name="merchant_withdrawals"),
    # Last: a non-integer id or an unknown path ending in "/" answers the JSON 404. Paths without the
    # slash are left unmatched so that CommonMiddleware still redirects `/api/v1/products` to the list.
    re_path(r"^(?:[\s\S]*/)?$", core_api.not_found),  # [\s\S]: a path with a newline in it too
]

urlpatterns = [
    path("", include("shop.urls")),
    path("", include("escrow.urls")),
    path("", include("disputes.urls_reputation")),
    path("", include("disputes.evidence_urls")),
    path("staff/disputes/", include("disputes.staff_urls")),
    path("", include("disputes.urls")),
    path("accounts/", include("accounts.urls")),
    path("account/security/", include("accounts.security_urls")),
    path("merchant/", include("shop.merchant_urls")),
    path("merchant/money/", include("escrow.merchant_urls")),
    path("merchant/disputes/", include("disputes.merchant_urls")),
    path("transparency/", include("escrow.transparency_urls")),
    path("api/v1/", include((api_v1, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file (no inline script); its page keeps
    # one small inline <style>, allowed on this page only.
    path(
        "api/docs/",
        csp_update({"style-src": ["'unsafe-inline'"]})(SpectacularSwaggerSplitView.as_view(url_name="schema")),
        name="api-docs",
    ),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
]

if gateway_enabled(SANDBOX):
    # Its pay page takes no money, so it exists only where the sandbox is enabled: never in production.
    urlpatterns.append(path("payments/sandbox/", include("escrow.gateways.sandbox.urls")))
