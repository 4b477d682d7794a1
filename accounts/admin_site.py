"""The admin site, behind the second factor: staff reach it only with a verified session.

Installed as the default site by `accounts.apps.VerifiedAdminConfig` (in place of
`django.contrib.admin` in INSTALLED_APPS), so every `admin.site.register(…)` lands here.
"""

from functools import update_wrapper

from django.contrib import admin
from django.urls import reverse

from accounts.two_factor import two_factor_gate


class VerifiedAdminSite(admin.AdminSite):
    """Like django-otp's OTPAdminSite, but an unverified staff member is sent to enrol a device or to
    the shop's verify page (then back), instead of to a second login form."""

    def has_permission(self, request) -> bool:
        return super().has_permission(request) and request.user.is_verified()

    def _two_factor_redirect(self, request, *, next_url: str | None = None):
        user = request.user
        if user.is_active and user.is_staff and not user.is_verified():
            return two_factor_gate(request, next_url=next_url)
        return None

    def admin_view(self, view, cacheable=False):
        protected = super().admin_view(view, cacheable)

        def inner(request, *args, **kwargs):
            if request.path != reverse("admin:logout", current_app=self.name):
                response = self._two_factor_redirect(request)
                if response is not None:
                    return response
            return protected(request, *args, **kwargs)

        return update_wrapper(inner, protected)

    def login(self, request, extra_context=None):
        # A signed-in but unverified staff member would otherwise see "not authorised" here.
        next_url = request.GET.get("next") or reverse("admin:index", current_app=self.name)
        response = self._two_factor_redirect(request, next_url=next_url)
        if response is not None:
            return response
        return super().login(request, extra_context)
