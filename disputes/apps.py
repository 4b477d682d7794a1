from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DisputesConfig(AppConfig):
    name = "disputes"
    verbose_name = _("Disputes")

    def ready(self) -> None:
        from accounts import hooks
        from disputes import activity

        hooks.activity_section("disputes", activity.disputes_rows)
