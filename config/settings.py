"""Settings for every environment, read from the environment.

SHOP_ENV=production demands every secret from the environment and turns on the deployment
protections; anything else is a development machine, where missing secrets come from the generated
`var/local.env` and the database defaults to an SQLite file.
"""

import os
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from config.local_secrets import load_local_secrets
from config.log_format import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SHOP_VAR_DIR", BASE_DIR / "var"))

PRODUCTION = os.environ.get("SHOP_ENV", "development") == "production"


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


_local = {} if PRODUCTION else load_local_secrets(VAR_DIR / "local.env")


def _secret(name: str) -> str:
    value = os.environ.get(name) or _local.get(name)
    if not value:
        raise RuntimeError(f"{name} must be set in the environment (SHOP_ENV=production).")
    return value


# Off unless asked for (the demo script asks): a debug page shows code, settings and the environment.
DEBUG = _env_bool("DEBUG", default=False)
# Debug pages also hide settings named *URL*: DATABASE_URL, CELERY_BROKER_URL, CACHE_URL carry passwords.
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.error_reports.ServiceUrlHidingFilter"
SECRET_KEY = _secret("SECRET_KEY")
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h] or (
    [] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"]
)
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "accounts.apps.VerifiedAdminConfig",  # django.contrib.admin behind the second factor
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "django_otp",
    # The shop's devices are accounts.AuthenticatorDevice (reusing otp_totp's TOTP logic) and
    # accounts.BackupCodeDevice; these stay installed for that and for accounts' migration 0004,
    # which moves their plaintext devices out. Their own tables stay empty.
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "core",  # one table: the API's idempotency keys (core/idempotency.py)
    "accounts",
    "shop",
    "escrow",
    "disputes",
    "risk",
    "captcha",  # django-simple-captcha: the self-hosted challenge of a risky checkout (no third party)
]

MIDDLEWARE = [
    "config.ops.OpsEndpointsMiddleware",  # /healthz, /readyz, /metrics: before the HTTPS redirect and host check
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A request without a session cookie to a view marked @session_not_required (the checkout API, the
    # order's keys, the payment webhooks) turns off here into SESSIONLESS_MIDDLEWARE (core/sessionless.py).
    "core.sessionless.SessionlessChainMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # After authentication: a signed-in user's saved language wins over the cookie and the browser's.
    "accounts.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "core.device.DeviceCookieMiddleware",
    "accounts.sessions.SessionTrackingMiddleware",  # after the device cookie: new sessions record it
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.csp.CSPMiddleware",  # django-csp's, its fixed policy built once
    "axes.middleware.AxesMiddleware",
]
# The rest of the chain for those requests: what still adds a header or checks something without a
# session (the language of error messages, the Host check, the device cookie, X-Frame-Options, CSP).
SESSIONLESS_MIDDLEWARE = [
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "core.sessionless.AnonymousUserMiddleware",
    "core.device.DeviceCookieMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.csp.CSPMiddleware",  # django-csp's, its fixed policy built once
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "disputes.context_processors.inbox",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
# Web and worker processes keep their connection for up to a minute (no connect per request or task),
# checked with a ping before its first use in each request or task, so one PostgreSQL dropped is replaced.
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
# The hot paths' statements are prepared once per PostgreSQL session (core/prepared.py). A pooler in
# transaction mode (PgBouncer) hands a session's statements to other clients: turn it off there.
DATABASE_PREPARED_STATEMENTS = _env_bool("DATABASE_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo runs a web server and a Celery worker against one file: WAL lets readers go on while
    # one writer writes, IMMEDIATE takes the write lock up front instead of failing half-way.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# Behind PgBouncer in transaction mode (docs/deploy.md): a server-side cursor (`.iterator()` outside a
# transaction) cannot outlive the transaction the pooler gives the connection for.
if _env_bool("DATABASE_TRANSACTION_POOLING", False):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- auth -----------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "accounts.backends.EmailOrUsernameBackend",  # Django's ModelBackend, also by e-mail address
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "shop:catalog"
LOGOUT_REDIRECT_URL = "shop:catalog"
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = 0.25  # hours
AXES_ENABLED = _env_bool("AXES_ENABLED", True)

# --- i18n -----------------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = "UTC"
USE_TZ = True

# --- static and e-mail ----------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if PRODUCTION else "django.core.mail.backends.console.EmailBackend",
)
# For EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend: one file per message in this folder.
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
# SMTP (the production default backend).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "shop@localhost")
# Where buyers and merchants write with a complaint (the contact page and the footer link to it).
SUPPORT_EMAIL = os.environ.get("SUPPORT_EMAIL", DEFAULT_FROM_EMAIL)
SHOP_BASE_URL = os.environ.get("SHOP_BASE_URL", "http://127.0.0.1:8000")

# --- uploaded files (issue 3: merchant stock uploads) ----------------------------------------------
# Stock files wait under var/ until the worker imports them (then they are deleted: they hold
# plaintext keys). On several machines MEDIA_ROOT must be a volume the web and worker processes share.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"  # never served: uploads are read back only through the merchant's own views
FILE_UPLOAD_TEMP_DIR = None  # the system's; files over FILE_UPLOAD_MAX_MEMORY_SIZE are streamed there
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024  # a pasted list of keys is a form field
SHOP_STOCK_UPLOAD_MAX_BYTES = 50 * 1024 * 1024
SHOP_STOCK_UPLOAD_MAX_LINES = 1_000_000
SHOP_STOCK_UPLOAD_BATCH = int(os.environ.get("SHOP_STOCK_UPLOAD_BATCH", "5000"))
# A running upload whose last batch committed longer ago than this lost its worker (a batch of 5,000
# keys takes a second or two): the beat's shop.stock_uploads_resume queues its import again, which
# resumes after the last committed batch.
SHOP_STOCK_UPLOAD_STALL_SECONDS = int(os.environ.get("SHOP_STOCK_UPLOAD_STALL_SECONDS", "120"))
# --- end of uploaded files ------------------------------------------------------------------------

# --- Celery ---------------------------------------------------------------------------------------
# Without CELERY_BROKER_URL the broker is a folder on disk: a real worker and beat run against it
# with no server to install. Production points this at Redis.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery-queue"
    _queue_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(VAR_DIR / "celery-control"),
        "polling_interval": 0.05,
    }
elif CELERY_BROKER_URL.startswith("redis://"):
    # kombu's Redis transport with its one fix for a Redis restarting mid-task (see config/broker.py).
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    # A broker that vanishes without closing the socket is noticed within seconds, by the worker
    # (health checks) and by a web process publishing a delivery (socket timeouts).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "retry_on_timeout": True,
    }
# The worker never gives up on the broker: it reconnects at startup and after any outage, however
# long (a worker that exits when Redis restarts leaves every later payment undelivered).
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# A web process publishing a task while the broker is down gives up within about a second; the
# order row is the durable job and the beat's sweeper delivers it (escrow/delivery.py).
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
# A paid order is normally delivered within a second; one still `paid` after this many seconds lost
# its delivery task, and the sweeper (escrow.orders_deliver_stuck) delivers it.
ESCROW_DELIVERY_GRACE_SECONDS = int(os.environ.get("ESCROW_DELIVERY_GRACE_SECONDS", "5"))
CELERY_TASK_ALWAYS_EAGER = _env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Celery reads these four on every task it publishes. Left unset, each read tries the CELERY_ name and
# the bare one in Django's settings, each miss an exception, before its default: ~60 µs of CPU per
# delivery queued (bench/enqueue_cpu.py). Set here to Celery's own defaults, they are found at once.
CELERY_TASK_DEFAULT_QUEUE = "celery"  # the queue the worker reads
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_TASK_REPR_MAXLEVELS = 3
CELERY_BROKER_POOL_ACQUIRE_TIMEOUT = None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection before and after each task unless this many
# tasks have not run yet: never, here. config/celery.py closes them around tasks as Django does around
# requests instead (only the broken ones and those older than CONN_MAX_AGE).
CELERY_DB_REUSE_MAX = 2**62
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Only the beat holding a lease in Redis sends periodic tasks: a second beat started by mistake waits
# as a standby (config/beat.py; BEAT_LEASE_SECONDS, BEAT_LEASE_URL).
CELERY_BEAT_SCHEDULER = "config.beat:SingleBeatScheduler"
CELERY_TIMEZONE = "UTC"

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.AccountTokenAuthentication",  # any user's `Token cka_…` (issue 11)
        "rest_framework.authentication.SessionAuthentication",
        "shop.authentication.MerchantTokenAuthentication",  # `Authorization: Token <token>` (issue 3)
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    # drf-spectacular's, plus each operation's token scopes and its Idempotency-Key header.
    "DEFAULT_SCHEMA_CLASS": "core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Card-key escrow shop API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files come from the drf-spectacular-sidecar package, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Choice sets whose field names other components use too ("status", "outcome", …) get their own names.
    "ENUM_NAME_OVERRIDES": {
        "DisputeStatusEnum": "disputes.models.DisputeStatus",
        "DisputeOutcomeEnum": "disputes.models.DisputeOutcome",
        "DisputeMessageRoleEnum": "disputes.models.MessageRole",
        "DisputeQuestionForEnum": ["buyer", "merchant"],
        "DisputeDecisionEnum": ["refund", "release", "split"],
        "OrderStatusEnum": "escrow.models.OrderStatus",
        "ProductStatusEnum": "shop.models.ProductStatus",
        "WithdrawalStatusEnum": "escrow.models.WithdrawalStatus",
        "RefundStatusEnum": "escrow.models.RefundStatus",
        "WebhookEndpointStatusEnum": "shop.models.WebhookEndpointStatus",
        "WebhookDeliveryStatusEnum": "shop.models.WebhookDeliveryStatus",
    },
}

# --- the shop's own settings ----------------------------------------------------------------------
CARDKEY_MASTER_KEYS = _secret("CARDKEY_MASTER_KEYS")
CARDKEY_INDEX_KEY = _secret("CARDKEY_INDEX_KEY")
# Gateways that take payments, comma-separated; checkout uses the first. The sandbox hands out keys for
# money that never arrives, so production never runs it (escrow.E001 checks this again at run time).
# The real gateways' settings (docs/payments.md): a gateway is "configured" when all of its are set.
EPAY_URL = os.environ.get("EPAY_URL", "")  # the provider's base URL; the buyer goes to EPAY_URL + submit.php
EPAY_PID = os.environ.get("EPAY_PID", "")
EPAY_KEY = os.environ.get("EPAY_KEY", "")
# alipay / wxpay / qqpay; empty: the provider's own cashier lets the buyer choose.
EPAY_DEFAULT_TYPE = os.environ.get("EPAY_DEFAULT_TYPE", "")
ALIPAY_APP_ID = os.environ.get("ALIPAY_APP_ID", "")
ALIPAY_PRIVATE_KEY = os.environ.get("ALIPAY_PRIVATE_KEY", "")  # the shop's RSA2 key (PEM or bare base64)
ALIPAY_PUBLIC_KEY = os.environ.get("ALIPAY_PUBLIC_KEY", "")  # Alipay's public key (PEM or bare base64)
ALIPAY_GATEWAY_URL = os.environ.get("ALIPAY_GATEWAY_URL", "https://openapi.alipay.com/gateway.do")
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
_CONFIGURED_GATEWAYS = [
    name
    for name, values in (
        ("epay", (EPAY_URL, EPAY_PID, EPAY_KEY)),
        ("alipay", (ALIPAY_APP_ID, ALIPAY_PRIVATE_KEY, ALIPAY_PUBLIC_KEY)),
        ("stripe", (STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET)),
    )
    if all(values)
]
# Gateways that take payments, comma-separated, in the order checkout offers them (the first is the
# default). Unset: the sandbox (never in production) and then every real gateway whose settings are set.
PAYMENT_GATEWAYS = [
    name.strip()
    for name in os.environ.get(
        "PAYMENT_GATEWAYS", ",".join(([] if PRODUCTION else ["sandbox"]) + _CONFIGURED_GATEWAYS)
    ).split(",")
    if name.strip()
]
if PRODUCTION and "sandbox" in PAYMENT_GATEWAYS:
    raise ImproperlyConfigured(
        "PAYMENT_GATEWAYS includes 'sandbox' with SHOP_ENV=production: the sandbox gateway delivers keys for "
        "payments nobody made. Remove it from PAYMENT_GATEWAYS (name a real gateway), or unset SHOP_ENV."
    )
SANDBOX_WEBHOOK_SECRET = _secret("SANDBOX_WEBHOOK_SECRET") if "sandbox" in PAYMENT_GATEWAYS else ""
SANDBOX_WEBHOOK_TOLERANCE_SECONDS = 300
# --- webhooks to merchants (shop/services/webhooks.py) ------------------------------------------------
# Only ever for the tests' local HTTP server: lets an endpoint resolve to a loopback address (127.0.0.1,
# ::1). Private, link-local and the rest stay refused; never allowed with SHOP_ENV=production.
WEBHOOKS_ALLOW_LOOPBACK = _env_bool("WEBHOOKS_ALLOW_LOOPBACK", False)
if PRODUCTION and WEBHOOKS_ALLOW_LOOPBACK:
    raise ImproperlyConfigured("WEBHOOKS_ALLOW_LOOPBACK cannot be set with SHOP_ENV=production.")
WEBHOOK_CONNECT_TIMEOUT_SECONDS = 3.0
WEBHOOK_READ_TIMEOUT_SECONDS = 5.0
PLATFORM_FEE_PERCENT = Decimal(os.environ.get("PLATFORM_FEE_PERCENT", "5"))
RESERVATION_MINUTES = int(os.environ.get("RESERVATION_MINUTES", "15"))
# The link to an order is e-mailed this long after checkout if the order has no keys by then (the beat's
# escrow.orders_link_email); a buyer who paid sooner finds it in the "keys ready" e-mail instead.
ORDER_LINK_EMAIL_DELAY_SECONDS = int(os.environ.get("ORDER_LINK_EMAIL_DELAY_SECONDS", "60"))
# A request for a paid order's keys waits this long for the worker's delivery in flight (escrow/key_reveal.py),
# at most ORDER_KEYS_WAITERS requests per web process at once (0 or 0 s: answer 409 at once, as before).
ORDER_KEYS_WAIT_SECONDS = float(os.environ.get("ORDER_KEYS_WAIT_SECONDS", "1.0"))
ORDER_KEYS_WAITERS = int(os.environ.get("ORDER_KEYS_WAITERS", "1"))

# --- accounts (issue 11): the audit hash chain, spending limits ---------------------------------------
# The sealing task chains audit entries (accounts/README.md); off, entries are still written but stay
# unsealed (bench/checkout.py measures the difference).
AUDIT_CHAIN_ENABLED = os.environ.get("AUDIT_CHAIN_ENABLED", "1").lower() not in {"0", "false", "no", "off"}
# A buyer's daily spending limit counts from midnight in this zone (most buyers are in China).
SPENDING_LIMIT_TIME_ZONE = os.environ.get("SPENDING_LIMIT_TIME_ZONE", "Asia/Shanghai")

# --- escrow money lifecycle (issue 4): reserves, withdrawals, two factors ---------------------------
# Rolling reserve: this share of each release is held this many days for merchants younger than
# RESERVE_MERCHANT_AGE_DAYS, then released by a periodic task.
RESERVE_PERCENT = Decimal(os.environ.get("RESERVE_PERCENT", "10"))
RESERVE_DAYS = int(os.environ.get("RESERVE_DAYS", "14"))
RESERVE_MERCHANT_AGE_DAYS = int(os.environ.get("RESERVE_MERCHANT_AGE_DAYS", "90"))
# Smallest withdrawal, in minor units (1000 = 10.00).
# Disputes (disputes/README.md): hours the merchant has to answer, the buyer to answer a replacement or
# a contest, and staff to arbitrate (published; the queue flags overdue ones).
DISPUTE_MERCHANT_HOURS = int(os.environ.get("DISPUTE_MERCHANT_HOURS", "48"))
DISPUTE_BUYER_HOURS = int(os.environ.get("DISPUTE_BUYER_HOURS", "48"))
DISPUTE_ARBITRATION_HOURS = int(os.environ.get("DISPUTE_ARBITRATION_HOURS", "72"))
# Base64 of the 32-byte Ed25519 seed that signs dispute evidence packages (`manage.py verify_evidence`).
EVIDENCE_SIGNING_KEY = _secret("EVIDENCE_SIGNING_KEY")
# Dispute screenshots: outside STATIC_ROOT and MEDIA_ROOT, so no web server serves them by path; only
# `disputes.views.attachment` does, after checking who asks.
DISPUTE_FILES_ROOT = Path(os.environ.get("DISPUTE_FILES_ROOT", VAR_DIR / "dispute-files"))
# Merchants' KYC documents (identity cards, business licences): sealed with the merchant's data key, in
# files outside STATIC_ROOT and MEDIA_ROOT; only `staff.views.kyc_document` serves them, to staff with a
# verified second factor. Deleted this many days after the merchant's rejection (the beat schedule).
KYC_FILES_ROOT = Path(os.environ.get("KYC_FILES_ROOT", VAR_DIR / "kyc-files"))
KYC_DOCUMENT_MAX_BYTES = 5 * 1024 * 1024
KYC_REJECTED_RETENTION_DAYS = int(os.environ.get("KYC_REJECTED_RETENTION_DAYS", "90"))
WITHDRAWAL_MINIMUM = int(os.environ.get("WITHDRAWAL_MINIMUM", "1000"))
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "Card-key shop")
BACKUP_CODE_COUNT = 10

# --- abuse limits: shared cache, client IP, throttles, login lockout, CSP (issue 7) ------------------
# Rate limits and counters live in this cache. With CACHE_URL=redis://… every process and machine
# shares them; without it (the demo, tests) each process has its own memory.
CACHE_URL = os.environ.get("CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "core.cache.RedisCache", "LOCATION": CACHE_URL}  # Django's, one client per pool
        if CACHE_URL.startswith(("redis://", "rediss://", "unix://"))
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
# Proxies (CIDRs) whose X-Forwarded-For is believed; see core/client_ip.py.
TRUSTED_PROXIES = [c.strip() for c in os.environ.get("TRUSTED_PROXIES", "").split(",") if c.strip()]
# Per client IP (and, for reveals, per order): see core/ratelimit.py. The API and the web forms share them.
RATE_LIMITS = {
    "signup": os.environ.get("SIGNUP_RATE_LIMIT", "20/hour"),
    "email_link": os.environ.get("EMAIL_LINK_RATE_LIMIT", "5/hour"),  # "send the verification link again"
    "checkout": os.environ.get("CHECKOUT_RATE_LIMIT", "10/min"),
    "key_reveal": os.environ.get("KEY_REVEAL_RATE_LIMIT", "30/min"),
    # The order lookup mails a link: per client address, and per e-mail address so nobody's inbox is flooded.
    "order_lookup": os.environ.get("ORDER_LOOKUP_RATE_LIMIT", "5/min"),
    "order_lookup_email": os.environ.get("ORDER_LOOKUP_EMAIL_RATE_LIMIT", "5/hour"),
    # The merchant API (core.throttling.TokenAndAddressThrottle): per token (or signed-in user) and
    # per client IP, whichever runs out first.
    "api_token": os.environ.get("API_TOKEN_RATE_LIMIT", "120/min"),
    "api_ip": os.environ.get("API_IP_RATE_LIMIT", "300/min"),
}
# Keys one buyer may hold in unpaid (awaiting_payment) orders, per e-mail and per checkout IP.
RESERVATION_MAX_KEYS_PER_EMAIL = int(os.environ.get("RESERVATION_MAX_KEYS_PER_EMAIL", "20"))
RESERVATION_MAX_KEYS_PER_IP = int(os.environ.get("RESERVATION_MAX_KEYS_PER_IP", "50"))
# No product sells more than this many keys in one order, whatever its own max_per_order says.
ORDER_MAX_QUANTITY = int(os.environ.get("ORDER_MAX_QUANTITY", "20"))
# Login: AXES_FAILURE_LIMIT wrong passwords lock one username from one address; a password sprayed
# over many usernames from one address locks that address after LOGIN_FAILURE_LIMIT_PER_IP.
# A guess spread over many addresses locks the account after LOGIN_FAILURE_LIMIT_PER_ACCOUNT; its owner
# gets an unlock link by e-mail (accounts/lockout.py).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address", "username"]  # this order: accounts/lockout.py
AXES_HANDLER = "accounts.lockout.UserThenAddressHandler"
AXES_USERNAME_CALLABLE = "accounts.lockout.username_of"  # the username, whether typed or found by e-mail
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
LOGIN_FAILURE_LIMIT_PER_ACCOUNT = int(os.environ.get("LOGIN_FAILURE_LIMIT_PER_ACCOUNT", "20"))
AXES_CLIENT_IP_CALLABLE = "core.client_ip.client_ip"
LOGIN_FAILURE_LIMIT_PER_IP = int(os.environ.get("LOGIN_FAILURE_LIMIT_PER_IP", "30"))
# Wrong second-factor codes double the wait (django-otp); it stops doubling before this many seconds.
OTP_THROTTLE_MAX_DELAY_SECONDS = 60
# Signed links: e-mail verification and unlock (3 days), "this wasn't me" in a new-device alert (7 days).
ACCOUNT_LINK_MAX_AGE_SECONDS = int(os.environ.get("ACCOUNT_LINK_MAX_AGE_SECONDS", str(3 * 24 * 3600)))
ACCOUNT_ALERT_LINK_MAX_AGE_SECONDS = int(os.environ.get("ACCOUNT_ALERT_LINK_MAX_AGE_SECONDS", str(7 * 24 * 3600)))
# The security page's login history reaches back this far.
ACCOUNT_HISTORY_DAYS = 90
# No inline script or style anywhere (the API docs page loosens style only for itself).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# --- end of abuse limits ------------------------------------------------------------------------------

# --- the risk engine (risk/README.md) ---------------------------------------------------------------
# Risk imports none of our apps: config wires in the audit trail and the staff API's authentication.
RISK_AUDIT_RECORD = "accounts.services.audit_record"
RISK_STAFF_AUTHENTICATION_CLASSES = [
    "accounts.authentication.StaffTokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]
# A merchant with at least this many orders in 30 days is judged on their dispute rate; flagged, their
# rolling reserve becomes RISK_RAISED_RESERVE_PERCENT of each release (whatever their age) until staff
# approve them in the review queue. The rate itself is a rule (signal merchant_used_dispute_rate).
RISK_MERCHANT_MIN_ORDERS = int(os.environ.get("RISK_MERCHANT_MIN_ORDERS", "10"))
RISK_RAISED_RESERVE_PERCENT = Decimal(os.environ.get("RISK_RAISED_RESERVE_PERCENT", "30"))
# The checkout captcha: drawn by the server from the package's own font, nothing fetched at run time.
CAPTCHA_LENGTH = 5
CAPTCHA_TIMEOUT = 10  # minutes
CAPTCHA_IMAGE_SIZE = (150, 50)

# --- deployment protections -----------------------------------------------------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# LOG_FORMAT=json: one JSON object per line with the event's fields (order, payment, upload, task_id…);
# anything else: plain lines. See config/log_format.py.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").strip().lower()
LOGGING = logging_config(log_format=LOG_FORMAT, level=os.environ.get("LOG_LEVEL", "INFO"))
# In JSON mode Celery keeps the handlers above instead of installing its own, so workers and beat
# write JSON too (their level is then LOG_LEVEL, not the -l flag).
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"

# --- operations: /healthz, /readyz, /metrics (config/ops.py) -----------------------------------------
# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset, it answers 404.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# How long a process keeps its counts before sending them to Redis in one go (core/metrics.py).
METRICS_FLUSH_SECONDS = float(os.environ.get("METRICS_FLUSH_SECONDS", "1"))
