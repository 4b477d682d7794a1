from django.apps import AppConfig


class RiskConfig(AppConfig):
    name = "risk"
    verbose_name = "Risk"

    def ready(self) -> None:
        # Cache invalidation, not domain logic: every process reloads its snapshot of the rules and the
        # block list when one changes, however it was changed (risk/ruleset.py).
        from django.db.models.signals import post_delete, post_save

        from risk.models import BlockEntry, Rule
        from risk.ruleset import ruleset_changed

        for model in (Rule, BlockEntry):
            post_save.connect(ruleset_changed, sender=model, dispatch_uid=f"risk.ruleset.{model.__name__}.save")
            post_delete.connect(ruleset_changed, sender=model, dispatch_uid=f"risk.ruleset.{model.__name__}.delete")
