"""django-csp's middleware, with the shop's policy built once instead of on every response.

django-csp (4.x) builds the Content-Security-Policy header from the settings for each response, twice
(the policy and the report-only one): ~0.1 ms of CPU per request, 3.6 % of a web process under the
purchase benchmark (bench/purchase.py, py-spy), for a header that is the same every time unless a view
changes the policy (`csp_update`, `csp_replace`, its own config, an exemption) or a page asked for a
nonce. Those responses go through django-csp as before; every other one gets the headers django-csp
built for the first such response (built again when the settings change: tests override them).
"""

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject
from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

# What a view or decorator sets on a response to change its policy (django-csp's names).
_PER_RESPONSE = (
    "_csp_config",
    "_csp_update",
    "_csp_replace",
    "_csp_exempt",
    "_csp_config_ro",
    "_csp_update_ro",
    "_csp_replace_ro",
    "_csp_exempt_ro",
)
_fixed: dict[str, str] = {}  # header name -> the settings' policy ("": not sent)


class CSPMiddleware(DjangoCSPMiddleware):
    def process_response(self, request, response):
        if (
            getattr(request, "_csp_nonce", None) is not None
            or any(hasattr(response, name) for name in _PER_RESPONSE)
            or not _fixed_applies(request)
        ):
            return super().process_response(request, response)
        if not _fixed:  # what django-csp builds for a response that changes nothing
            _fixed.update({HEADER: build_policy(), HEADER_REPORT_ONLY: build_policy(report_only=True)})
        for name, value in _fixed.items():
            if value and name not in response:
                response[name] = value
        # As django-csp: a nonce asked for after the header is written is an error, not a silent miss.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response


def _fixed_applies(request) -> bool:
    """Not a debug page (django-csp leaves those alone) and not under an excluded prefix."""
    if settings.DEBUG:
        return False
    for setting in ("CONTENT_SECURITY_POLICY", "CONTENT_SECURITY_POLICY_REPORT_ONLY"):
        prefixes = (getattr(settings, setting, None) or {}).get("EXCLUDE_URL_PREFIXES") or ()
        if prefixes and request.path_info.startswith(tuple(prefixes)):
            return False
    return True


@receiver(setting_changed)
def _forget(setting, **kwargs):
    if setting in {"CONTENT_SECURITY_POLICY", "CONTENT_SECURITY_POLICY_REPORT_ONLY", "DEBUG"}:
        _fixed.clear()
