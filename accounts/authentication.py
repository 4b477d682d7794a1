"""`Authorization: Token cks_staff_…` for staff scripts (arbitration). A token is minted only after a fresh
second factor, so a request carrying one counts as a verified staff session."""

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts import services


class StaffTokenAuthentication(authentication.BaseAuthentication):
    """Answers only for tokens with the staff prefix, so it can sit before the merchant's class."""

    keyword = "Token"

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != self.keyword.lower().encode():
            return None
        if not parts[1].startswith(services.STAFF_TOKEN_PREFIX.encode()):
            return None
        token = services.staff_api_token_active(token=parts[1].decode(errors="replace"))
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
