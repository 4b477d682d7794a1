"""`Authorization: Token …` for the API.

- `cka_…`: any user's account token (`POST /api/v1/auth/token/` or the security page). It works where
  its user works: `AccountTokenAuthentication` for the buyer endpoints, and the staff and merchant
  classes accept it for staff and for a merchant's owner. `request.auth` is the token row; its
  `scopes` (list of str) say what a merchant's token may do.
- `cks_staff_…`: a staff token for scripts (arbitration), minted only after a fresh second factor.

A staff member's account token was issued only after a second factor too, so either counts as a
verified staff session.
"""

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts import account_services, services


def _token_in_header(request, keyword: str) -> str | None:
    parts = authentication.get_authorization_header(request).split()
    if len(parts) != 2 or parts[0].lower() != keyword.lower().encode():
        return None
    return parts[1].decode(errors="replace")


def account_token_authenticate(raw: str):
    """(user, token) for an active account token of an active user, else AuthenticationFailed."""
    token = account_services.account_api_token_active(token=raw)
    if token is None or not token.user.is_active:
        raise exceptions.AuthenticationFailed(_("Invalid or revoked token."))
    account_services.account_api_token_touch(token=token, now=timezone.now())
    return token.user, token


class AccountTokenAuthentication(authentication.BaseAuthentication):
    """Answers only for account tokens (`cka_…`), so it can sit before the merchant's class."""

    keyword = "Token"

    def authenticate(self, request):
        raw = _token_in_header(request, self.keyword)
        if raw is None or not raw.startswith(account_services.TOKEN_PREFIX):
            return None
        return account_token_authenticate(raw)

    def authenticate_header(self, request):
        return self.keyword


class AccountTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.AccountTokenAuthentication"
    name = "accountToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Token cka_<token>"}


class StaffTokenAuthentication(authentication.BaseAuthentication):
    """Answers only for tokens with the staff prefix, so it can sit before the merchant's class."""

    keyword = "Token"

    def authenticate(self, request):
        raw = _token_in_header(request, self.keyword)
        if raw is None:
            return None
        if raw.startswith(account_services.TOKEN_PREFIX):
            # Anyone's account token: a staff member's acts as staff; anyone else's as that person
            # (the staff permission then refuses them).
            return account_token_authenticate(raw)
        if not raw.startswith(services.STAFF_TOKEN_PREFIX):
            return None
        token = services.staff_api_token_active(token=raw)
        if token is None or not token.user.is_active or not token.user.is_staff:
            raise exceptions.AuthenticationFailed(_("Invalid or revoked token."))
        services.staff_api_token_touch(token=token, now=timezone.now())
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword


class StaffTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.StaffTokenAuthentication"
    name = "staffToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Token cks_staff_<token>"}
