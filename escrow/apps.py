from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EscrowConfig(AppConfig):
    name = "escrow"
    verbose_name = _("Escrow")

    def ready(self) -> None:
        import risk
        from accounts import hooks
        from escrow import activity, checks, reviews, services, withdrawals  # noqa: F401  (checks registers the system checks)

        hooks.on_email_verified(services.guest_orders_attach)
        hooks.activity_section("orders", activity.orders_rows)
        hooks.activity_section("key_reveals", activity.key_reveals_rows)
        hooks.activity_section("withdrawals", activity.withdrawals_rows)
        # The review queue (risk) approves and rejects escrow's subjects through escrow's services.
        risk.review_handler_register(
            "order", approve=reviews.order_review_item_approve, reject=reviews.order_review_item_reject
        )
        risk.review_handler_register(
            "withdrawal",
            approve=withdrawals.withdrawal_review_item_approve,
            reject=withdrawals.withdrawal_review_item_reject,
        )
