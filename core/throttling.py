"""DRF's throttle on the shared limiter, identifying clients by `core.client_ip`."""

from rest_framework.throttling import BaseThrottle

from core.client_ip import client_ip
from core.ratelimit import rate_limit_hit


class SharedScopedThrottle(BaseThrottle):
    """Limits a view by its `throttle_scope` (a key of `RATE_LIMITS`) per client IP, in the shared cache.

    The web pages count against the same scope and identity, so the API and the forms share one budget.
    """

    def get_ident(self, request) -> str:
        return client_ip(request)

    def allow_request(self, request, view) -> bool:
        decision = rate_limit_hit(scope=view.throttle_scope, identity=self.get_ident(request))
        self._wait = decision.retry_after
        return decision.allowed

    def wait(self) -> float | None:
        return self._wait
