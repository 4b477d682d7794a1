from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CoreConfig(AppConfig):
    """An app only for its one table (the API's idempotency keys); it still imports none of ours."""

    name = "core"
    verbose_name = _("Core")
