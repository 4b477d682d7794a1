from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EscrowConfig(AppConfig):
    name = "escrow"
    verbose_name = _("Escrow")

    def ready(self) -> None:
        import risk
        from escrow import (
            checks,  # noqa: F401  (registers the system checks)
            reviews,
            withdrawals,
        )

        # The review queue (risk) approves and rejects escrow's subjects through escrow's services.
        risk.review_handler_register(
            "order", approve=reviews.order_review_item_approve, reject=reviews.order_review_item_reject
        )
        risk.review_handler_register(
            "withdrawal",
            approve=withdrawals.withdrawal_review_item_approve,
            reject=withdrawals.withdrawal_review_item_reject,
        )
