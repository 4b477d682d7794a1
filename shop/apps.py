from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = _("Shop")

    def ready(self) -> None:
        from accounts import hooks
        from shop import accounts_hooks, services

        hooks.role_provider(accounts_hooks.merchant_role)
        hooks.on_credentials_revoked(services.merchant_api_tokens_revoke_all)
