from csp.decorators import csp_update
from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.http import require_safe
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import api as accounts_api
from accounts import views as accounts_views
from config import ops
from core import api as core_api
from disputes import api as disputes_api
from escrow import api as escrow_api
from escrow import merchant_api as escrow_merchant_api
from escrow import merchant_views as escrow_merchant_views
from escrow.gateways import SANDBOX, gateway_enabled
from risk import api as risk_api
from shop import api as shop_api
from shop import merchant_api as shop_merchant_api
from shop import webhooks_api as shop_webhooks_api

api_v1 = [
    path("auth/signup/", accounts_api.SignUp.as_view(), name="auth_signup"),
    path("auth/token/", accounts_api.TokenIssue.as_view(), name="auth_token"),
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
    path("staff/review-queue/", risk_api.ReviewQueue.as_view(), name="staff_review_queue"),
    path("staff/review-queue/<int:pk>/approve/", risk_api.ReviewApprove.as_view(), name="staff_review_approve"),
    path("staff/review-queue/<int:pk>/reject/", risk_api.ReviewReject.as_view(), name="staff_review_reject"),
    path("staff/risk-decisions/", risk_api.DecisionList.as_view(), name="staff_risk_decisions"),
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
    # Webhooks to merchants (shop/webhooks_api.py).
    path("merchant/webhooks/", shop_webhooks_api.WebhookEndpointList.as_view(), name="merchant_webhooks"),
    path("merchant/webhooks/<int:pk>/", shop_webhooks_api.WebhookEndpointDetail.as_view(), name="merchant_webhook"),
    path(
        "merchant/webhooks/<int:pk>/rotate-secret/",
        shop_webhooks_api.WebhookSecretRotate.as_view(),
        name="merchant_webhook_rotate_secret",
    ),
    path(
        "merchant/webhooks/<int:pk>/enable/",
        shop_webhooks_api.WebhookEndpointEnable.as_view(),
        name="merchant_webhook_enable",
    ),
    path(
        "merchant/webhooks/<int:pk>/deliveries/",
        shop_webhooks_api.WebhookDeliveryList.as_view(),
        name="merchant_webhook_deliveries",
    ),
    path(
        "merchant/webhook-deliveries/<int:pk>/resend/",
        shop_webhooks_api.WebhookDeliveryResend.as_view(),
        name="merchant_webhook_delivery_resend",
    ),
    # Last: a non-integer id or an unknown path ending in "/" answers the JSON 404. Paths without the
    # slash are left unmatched so that CommonMiddleware still redirects `/api/v1/products` to the list.
    re_path(r"^(?:[\s\S]*/)?$", core_api.not_found),  # [\s\S]: a path with a newline in it too
]

urlpatterns = [
    # Answered first by config.ops.OpsEndpointsMiddleware (before the HTTPS redirect and the host check,
    # so a load balancer can probe by IP); named here as well, for reverse() and other methods (405).
    path("healthz", require_safe(ops.healthz), name="healthz"),
    path("readyz", require_safe(ops.readyz), name="readyz"),
    path("metrics", require_safe(ops.metrics_view), name="metrics"),
    path("", include("shop.urls")),
    path("", include("escrow.urls")),
    path("", include("disputes.urls_reputation")),
    path("", include("disputes.evidence_urls")),
    path("staff/disputes/", include("disputes.staff_urls")),
    path("staff/", include("staff.urls")),
    path("staff/risk/", include("risk.urls")),
    path("", include("disputes.urls")),
    path("accounts/", include("accounts.urls")),
    path("account/security/", include("accounts.security_urls")),
    # The dashboard reads orders, money and disputes, so it is escrow's; the rest of /merchant/ is shop's.
    path("merchant/", escrow_merchant_views.dashboard, name="merchant_dashboard"),
    path("account/limits/", include("escrow.limits_urls")),
    path("merchant/", include("shop.merchant_urls")),
    path("merchant/money/", include("escrow.merchant_urls")),
    path("merchant/orders/", include("escrow.merchant_order_urls")),
    path("merchant/disputes/", include("disputes.merchant_urls")),
    path("merchant/webhooks/", include("shop.webhook_urls")),
    path("transparency/", include("escrow.transparency_urls")),
    path("security/", TemplateView.as_view(template_name="security_tips.html"), name="security_tips"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file (no inline script); its page keeps
    # one small inline <style>, allowed on this page only.
    path(
        "api/docs/",
        csp_update({"style-src": ["'unsafe-inline'"]})(SpectacularSwaggerSplitView.as_view(url_name="schema")),
        name="api-docs",
    ),
    # The language switch remembers the choice on the signed-in user too (accounts.views.language_set).
    path("i18n/setlang/", accounts_views.language_set, name="set_language"),
    path("i18n/", include("django.conf.urls.i18n")),
    # The trust pages in the footer: plain words, no data.
    path("faq/", TemplateView.as_view(template_name="pages/faq.html"), name="faq"),
    path("terms/", TemplateView.as_view(template_name="pages/terms.html"), name="terms"),
    path("privacy/", TemplateView.as_view(template_name="pages/privacy.html"), name="privacy"),
    path(
        "contact/",
        TemplateView.as_view(
            template_name="pages/contact.html", extra_context={"contact_email": settings.SUPPORT_EMAIL}
        ),
        name="contact",
    ),
    path("captcha/", include("captcha.urls")),  # the checkout challenge's images, drawn here
    path("admin/", admin.site.urls),
]

# The real gateways' callbacks are always mounted; each answers 404 unless its gateway is enabled.
payment_urlpatterns = [
    path("payments/epay/", include("escrow.gateways.epay.urls")),
    path("payments/alipay/", include("escrow.gateways.alipay.urls")),
    path("payments/stripe/", include("escrow.gateways.stripe.urls")),
]

if gateway_enabled(SANDBOX):
    # Its pay page takes no money, so it exists only where the sandbox is enabled: never in production.
    payment_urlpatterns.append(path("payments/sandbox/", include("escrow.gateways.sandbox.urls")))

# First the payment callbacks, then the API: a webhook and the checkout and keys calls (each purchase's
# path) resolve in ~10 µs instead of ~35 µs walking every app's patterns first (each app mounted at ""
# is tried, and fails). No other pattern starts with payments/ or api/v1/, so nothing is shadowed; a path
# under api/v1/ that no API pattern takes still falls through to the rest, as before.
urlpatterns = [*payment_urlpatterns, path("api/v1/", include((api_v1, "api"))), *urlpatterns]
