"""Every write of the shop app, one module per concern; `from shop import services` reaches them all.

| module | owns |
|---|---|
| `errors.py` | `ShopError`, the shop's refusal |
| `merchants.py` | creation with a data key, sign-up, approval and rejection, edits, re-wrapping data keys |
| `kyc.py` | the KYC step: checking and sealing the document, staff's audited reading, deletion after rejection |
| `products.py` | listing, edits, pause and resume, staff review (approve, reject, ask again), the low-stock e-mail |
| `keys.py` | reserve, release, sell, restock or revoke on refund, replace (inside escrow's transaction) |
| `stock_copy.py` | the raw SQL: COPY / INSERT … ON CONFLICT DO NOTHING of sealed keys |
| `stock.py` | importing a batch of keys, revoking unsold keys, recording an export |
| `uploads.py` | stock uploads: start (checked whole), batched import, finish |
| `tokens.py` | merchant API tokens: create after a fresh second factor, revoke, touch |
| `coupons.py` | coupons: create, switch off, the checkout's check and its atomic use |
| `webhooks.py` | webhooks to merchants: endpoints, the outbox (`webhook_emit`), delivery with back-off, giving up |

Callers may import from the concern modules too; private steps are reached only there.
"""

from shop.services.coupons import (
    coupon_code_normalise,
    coupon_create,
    coupon_deactivate,
    coupon_for_checkout,
    coupon_redeem,
)
from shop.services.errors import ShopError
from shop.services.keys import (
    KeyNotReplaceable,
    OutOfStock,
    key_replace,
    keys_refund_restock,
    keys_refund_revoke,
    keys_release,
    keys_reserve,
    keys_reserve_sql,
    keys_sell,
)
from shop.services.kyc import (
    KycDocument,
    KycSubmission,
    kyc_document_check,
    kyc_document_path,
    kyc_submission_check,
    merchant_kyc_document_read,
    merchant_kyc_documents_purge,
    merchant_kyc_submit,
)
from shop.services.merchants import (
    MERCHANT_FIELDS,
    merchant_approve,
    merchant_create,
    merchant_data_key,
    merchant_data_keys_rewrap,
    merchant_reject,
    merchant_signup,
    merchant_signup_visitor,
    merchant_signup_with_account,
    merchant_update,
)
from shop.services.products import (
    PRODUCT_FIELDS,
    price_tiers_check,
    product_approve,
    product_create,
    product_edit,
    product_low_stock_check,
    product_pause,
    product_reject,
    product_resume,
    product_review_reason,
    product_review_request,
    product_title_check,
    product_update,
)
from shop.services.stock import ImportCounts, keys_export_record, keys_import_batch, keys_revoke
from shop.services.stock_copy import card_keys_insert_skipping_duplicates
from shop.services.tokens import (
    API_TOKEN_PREFIX,
    api_scopes_check,
    api_token_digest,
    merchant_api_token_create,
    merchant_api_token_create_unchecked,
    merchant_api_token_revoke,
    merchant_api_token_touch,
    merchant_api_tokens_revoke_all,
)
from shop.services.uploads import (
    MAX_KEY_LENGTH,
    STOCK_UPLOAD_FINISHED,
    StockUploadTakenOver,
    stock_upload_process,
    stock_upload_start,
    stock_uploads_resume_stalled,
)
from shop.services.webhooks import (
    WebhookEndpointRefused,
    WebhookEventSpec,
    endpoint_secret,
    next_attempt_after,
    secret_aad,
    webhook_deliveries_due,
    webhook_delivery_attempt,
    webhook_delivery_resend,
    webhook_emit,
    webhook_emit_many,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_enable,
    webhook_endpoint_secret_rotate,
    webhook_secrets_reseal,
    webhook_url_check,
)
from shop.stock_files import StockFileError  # re-exported: callers catch it with ShopError

__all__ = [
    "API_TOKEN_PREFIX",
    "MAX_KEY_LENGTH",
    "MERCHANT_FIELDS",
    "PRODUCT_FIELDS",
    "STOCK_UPLOAD_FINISHED",
    "ImportCounts",
    "KeyNotReplaceable",
    "KycDocument",
    "KycSubmission",
    "OutOfStock",
    "ShopError",
    "StockFileError",
    "StockUploadTakenOver",
    "WebhookEndpointRefused",
    "WebhookEventSpec",
    "api_scopes_check",
    "api_token_digest",
    "card_keys_insert_skipping_duplicates",
    "coupon_code_normalise",
    "coupon_create",
    "coupon_deactivate",
    "coupon_for_checkout",
    "coupon_redeem",
    "endpoint_secret",
    "key_replace",
    "keys_export_record",
    "keys_import_batch",
    "keys_refund_restock",
    "keys_refund_revoke",
    "keys_release",
    "keys_reserve",
    "keys_reserve_sql",
    "keys_revoke",
    "keys_sell",
    "kyc_document_check",
    "kyc_document_path",
    "kyc_submission_check",
    "merchant_api_token_create",
    "merchant_api_token_create_unchecked",
    "merchant_api_token_revoke",
    "merchant_api_token_touch",
    "merchant_api_tokens_revoke_all",
    "merchant_approve",
    "merchant_create",
    "merchant_data_key",
    "merchant_data_keys_rewrap",
    "merchant_kyc_document_read",
    "merchant_kyc_documents_purge",
    "merchant_kyc_submit",
    "merchant_reject",
    "merchant_signup",
    "merchant_signup_visitor",
    "merchant_signup_with_account",
    "merchant_update",
    "next_attempt_after",
    "price_tiers_check",
    "product_approve",
    "product_create",
    "product_edit",
    "product_low_stock_check",
    "product_pause",
    "product_reject",
    "product_resume",
    "product_review_reason",
    "product_review_request",
    "product_title_check",
    "product_update",
    "secret_aad",
    "stock_upload_process",
    "stock_upload_start",
    "stock_uploads_resume_stalled",
    "webhook_deliveries_due",
    "webhook_delivery_attempt",
    "webhook_delivery_resend",
    "webhook_emit",
    "webhook_emit_many",
    "webhook_endpoint_create",
    "webhook_endpoint_delete",
    "webhook_endpoint_enable",
    "webhook_endpoint_secret_rotate",
    "webhook_secrets_reseal",
    "webhook_url_check",
]
