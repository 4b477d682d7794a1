"""`Authorization: Token <token>` for merchants' scripts: a merchant token (`cks_…`, created in the merchant
area) or the owner's account token (`cka_…`, from `POST /api/v1/auth/token/`). Either way `request.auth`
is the token and has `scopes`."""

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts import account_services
from accounts.authentication import account_token_authenticate
from shop import selectors, services


class MerchantTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(_("Send the header as 'Authorization: Token <token>'."))
        try:
            raw = parts[1].decode()
        except UnicodeDecodeError as error:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from error
        if raw.startswith(account_services.TOKEN_PREFIX):
            # The owner's account token works here as the owner (IsApprovedMerchant decides the rest);
            # a buyer's works on the buyer endpoints that share this class.
            return account_token_authenticate(raw)
        token = selectors.api_token_active(token=raw)
        if token is None or not token.merchant.user.is_active:
            raise exceptions.AuthenticationFailed(_("Invalid or revoked token."))
        services.merchant_api_token_touch(token=token, now=timezone.now())
        return token.merchant.user, token

    def authenticate_header(self, request):
        return self.keyword


class MerchantTokenScheme(OpenApiAuthenticationExtension):
    target_class = "shop.authentication.MerchantTokenAuthentication"
    name = "merchantToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Token <token>"}
