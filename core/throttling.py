"""DRF's throttle on the shared limiter (core.ratelimit), identifying clients by token and `core.client_ip`."""

from rest_framework.throttling import BaseThrottle

from core.client_ip import client_ip
from core.ratelimit import rate_limit_hit


def _token_identity(request) -> str | None:
    token = request.auth
    meta = getattr(token, "_meta", None)
    if meta is not None and getattr(token, "pk", None) is not None:
        return f"{meta.label_lower}:{token.pk}"
    user = getattr(request, "user", None)
    return f"user:{user.pk}" if user is not None and user.is_authenticated else None


class TokenAndAddressThrottle(BaseThrottle):
    """The API's limits per token (`RATE_LIMITS["api_token"]`; a session counts as its user) and per
    client IP (`RATE_LIMITS["api_ip"]`), in the shared cache; either one spent answers 429 with
    `Retry-After`. A script cannot dodge the token's limit from many addresses, nor many tokens the
    address's."""

    def allow_request(self, request, view) -> bool:
        checks = [("api_ip", client_ip(request))]
        identity = _token_identity(request)
        if identity is not None:
            checks.append(("api_token", identity))
        self._wait = 0
        for scope, ident in checks:
            decision = rate_limit_hit(scope=scope, identity=ident)
            if not decision.allowed:
                self._wait = decision.retry_after
                return False
        return True

    def wait(self) -> float | None:
        return self._wait
