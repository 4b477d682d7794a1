"""System checks (`manage.py check`) for what settings alone cannot guarantee."""

from django.conf import settings
from django.core.checks import Error, Info, Tags, Warning, register
from django.urls import NoReverseMatch, reverse

from escrow.gateways import GATEWAYS, SANDBOX, gateway_configured, gateways_enabled


def _sandbox_mounted() -> bool:
    try:
        reverse("sandbox:webhook")
    except NoReverseMatch:
        return False
    return True


@register(Tags.security)
def sandbox_not_in_production(app_configs, **kwargs):
    """escrow.E001: the settings refuse the sandbox in production when they load; this catches settings
    changed afterwards, or a URLconf built before they changed."""
    if not settings.PRODUCTION:
        return []
    found = []
    if SANDBOX in settings.PAYMENT_GATEWAYS:
        found.append("PAYMENT_GATEWAYS includes 'sandbox'")
    if _sandbox_mounted():
        found.append("its pages are mounted at /payments/sandbox/")
    if not found:
        return []
    return [
        Error(
            f"The sandbox gateway is enabled with SHOP_ENV=production ({'; '.join(found)}): it delivers keys for "
            "payments nobody made.",
            hint="Remove 'sandbox' from PAYMENT_GATEWAYS and restart every process.",
            id="escrow.E001",
        )
    ]


@register(Tags.security)
def payment_gateways_known(app_configs, **kwargs):
    """escrow.E002: a misspelt gateway name would silently take no payments; W003: one listed without its
    settings takes none either; I001: none at all in production."""
    unknown = [name for name in settings.PAYMENT_GATEWAYS if name not in GATEWAYS]
    if unknown:
        return [
            Error(
                f"PAYMENT_GATEWAYS names unknown gateway(s): {', '.join(unknown)}.",
                hint=f"Known gateways: {', '.join(sorted(GATEWAYS))}.",
                id="escrow.E002",
            )
        ]
    unconfigured = [name for name in settings.PAYMENT_GATEWAYS if name != SANDBOX and not gateway_configured(name)]
    if unconfigured:
        return [
            Warning(
                f"PAYMENT_GATEWAYS lists gateway(s) whose settings are missing: {', '.join(unconfigured)}; "
                "they take no payments.",
                hint="Set their environment variables (docs/payments.md) or remove them from PAYMENT_GATEWAYS.",
                id="escrow.W003",
            )
        ]
    if settings.PRODUCTION and not gateways_enabled():
        return [
            Info("No payment gateway is enabled (PAYMENT_GATEWAYS): checkout refuses every order.", id="escrow.I001")
        ]
    return []
