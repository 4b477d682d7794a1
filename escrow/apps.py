from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EscrowConfig(AppConfig):
    name = "escrow"
    verbose_name = _("Escrow")

    def ready(self) -> None:
        from escrow import checks  # noqa: F401  (registers the system checks)
