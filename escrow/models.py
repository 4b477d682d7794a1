import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils.translation import gettext_lazy as _

from core import crypto as core_crypto
from core.money import Currency
from core.transitions import Transitions
from shop import crypto as shop_crypto


class OrderStatus(models.TextChoices):
    AWAITING_PAYMENT = "awaiting_payment", _("Awaiting payment")
    PAID = "paid", _("Paid")
    HELD_FOR_REVIEW = "held_for_review", _("Held for review")
    DELIVERED = "delivered", _("Delivered")
    COMPLETED = "completed", _("Completed")
    EXPIRED = "expired", _("Expired")
    CANCELLED = "cancelled", _("Cancelled")
    DISPUTED = "disputed", _("Disputed")
    REFUNDED = "refunded", _("Refunded")
    PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")


S = OrderStatus
ORDER_TRANSITIONS = Transitions(
    {
        S.AWAITING_PAYMENT: {S.PAID, S.EXPIRED, S.CANCELLED, S.HELD_FOR_REVIEW},
        # A payment that arrives after expiry still counts: delivered if stock is there, else refunded.
        S.EXPIRED: {S.PAID, S.HELD_FOR_REVIEW},
        # A failed payment cancels; "pay again" inside the payment window takes the keys back (order_pay_again).
        S.CANCELLED: {S.PAID, S.HELD_FOR_REVIEW, S.AWAITING_PAYMENT},
        S.PAID: {S.DELIVERED, S.REFUNDED, S.HELD_FOR_REVIEW},
        # Staff review (escrow/reviews.py): approved → paid, then delivered as usual; rejected → refunded.
        S.HELD_FOR_REVIEW: {S.PAID, S.DELIVERED, S.REFUNDED},
        # Staff or the merchant may refund during the inspection window, in full or some of the keys.
        S.DELIVERED: {S.COMPLETED, S.DISPUTED, S.REFUNDED, S.PARTIALLY_REFUNDED},
        S.DISPUTED: {S.COMPLETED, S.REFUNDED, S.PARTIALLY_REFUNDED},
        # After release: a chargeback, a refund at the provider or by staff takes the money back
        # (escrow/clawbacks.py); a second one on a partly refunded order may take the rest.
        S.COMPLETED: {S.REFUNDED, S.PARTIALLY_REFUNDED},
        S.PARTIALLY_REFUNDED: {S.REFUNDED},
    }
)

# The money of an order in these states is still in escrow (a refund voids its holds; a clawback
# releases them first). A mismatched payment under review sits in suspense instead.
ORDER_STATUSES_IN_ESCROW = (OrderStatus.PAID, OrderStatus.DELIVERED, OrderStatus.DISPUTED)

# The buyer may see the keys of an order in these states (`Order.has_keys`; the key reveal's statement).
ORDER_STATUSES_WITH_KEYS = frozenset({S.DELIVERED, S.COMPLETED, S.DISPUTED, S.PARTIALLY_REFUNDED})

# The buyer of an order in these states has had no e-mail carrying its link (the delivered and refunded
# e-mails carry one): the beat sends them one a minute after checkout (ORDER_LINK_EMAIL_DELAY_SECONDS).
ORDER_LINK_EMAIL_STATUSES = [
    S.AWAITING_PAYMENT.value,
    S.PAID.value,
    S.HELD_FOR_REVIEW.value,
    S.CANCELLED.value,
    S.EXPIRED.value,
]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Order(models.Model):
    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="orders"
    )
    email = models.EmailField()
    product = models.ForeignKey("shop.Product", on_delete=models.PROTECT, related_name="orders")
    merchant = models.ForeignKey("shop.Merchant", on_delete=models.PROTECT, related_name="orders")
    quantity = models.PositiveIntegerField()
    # The unit price at this quantity (the product's wholesale tier, shop/pricing.py), and the coupon's
    # discount on unit_price x quantity: amount = unit_price x quantity - discount is what the buyer
    # pays, and all the ledger ever splits.
    unit_price = models.PositiveBigIntegerField()
    discount = models.PositiveBigIntegerField(default=0)
    coupon = models.ForeignKey("shop.Coupon", null=True, blank=True, on_delete=models.PROTECT, related_name="orders")
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    status = models.CharField(
        max_length=24, choices=OrderStatus.choices, default=OrderStatus.AWAITING_PAYMENT, db_index=True
    )
    # Only the hash of the guest's access token is kept; the token itself is in the buyer's link.
    access_token_hash = models.CharField(max_length=64, db_index=True)
    # Where the checkout came from (core.client_ip): the cap on keys held unpaid per address reads it.
    checkout_ip = models.GenericIPAddressField(null=True, blank=True)
    # The language the buyer checked out in: every e-mail about the order is written in it.
    language = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    inspection_ends_at = models.DateTimeField(null=True, blank=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # When the beat e-mailed the buyer the link to an order still without its keys a while after
    # checkout (escrow.notifications.orders_link_email_due); empty while that is still to come, and
    # for the orders delivered (or refunded) first, whose own e-mail carries the link instead.
    link_emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        indexes = [
            # The delivery sweeper and verify_orders look for paid orders still waiting for their
            # keys; only a handful are ever in that state, so the index stays tiny.
            models.Index(fields=["paid_at"], condition=models.Q(status="paid"), name="escrow_order_paid_waiting"),
            # The link e-mail's beat looks for orders placed a minute ago and neither mailed nor delivered:
            # only the last minute's checkouts (and the unpaid ones of the last beat) are ever in it.
            models.Index(
                fields=["created_at"],
                condition=models.Q(link_emailed_at__isnull=True, status__in=ORDER_LINK_EMAIL_STATUSES),
                name="escrow_order_link_unmailed",
            ),
            # The checkout's reservation caps sum what one e-mail and one address hold unpaid
            # (escrow/checkout_sql.py, as `UPPER(email::text) = UPPER(%s)` and `checkout_ip = %s`):
            # without these, every checkout read every unpaid order (a sequential scan once most
            # orders are unpaid: ~6 ms of PostgreSQL per checkout with 17,000 of them).
            models.Index(
                Upper("email"), condition=Q(status=OrderStatus.AWAITING_PAYMENT), name="escrow_order_unpaid_email"
            ),
            models.Index(
                fields=["checkout_ip"], condition=Q(status=OrderStatus.AWAITING_PAYMENT), name="escrow_order_unpaid_ip"
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.pk}"

    @property
    def has_keys(self) -> bool:
        return self.status in ORDER_STATUSES_WITH_KEYS


class PaymentStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    MISMATCHED = "mismatched", _("Amount or currency did not match")


PAYMENT_TRANSITIONS = Transitions(
    {
        PaymentStatus.PENDING: {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.MISMATCHED},
        # A gateway may report a success after its failure (a retried charge): the money is real, so it
        # is booked like any late payment (delivered if stock is there, else refunded).
        PaymentStatus.FAILED: {PaymentStatus.SUCCEEDED, PaymentStatus.MISMATCHED},
        # Staff approved a held payment that covers its order (escrow.reviews.order_review_approve).
        PaymentStatus.MISMATCHED: {PaymentStatus.SUCCEEDED},
    }
)


class Payment(models.Model):
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="payments")
    gateway = models.CharField(max_length=32)
    payment_id = models.CharField(max_length=64)
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    status = models.CharField(max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.PENDING)
    received_amount = models.PositiveBigIntegerField(null=True, blank=True)
    received_currency = models.CharField(max_length=3, blank=True)
    # The provider's own id of the payment (epay's or Alipay's trade_no, Stripe's PaymentIntent), once paid.
    provider_reference = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["gateway", "payment_id"], name="payment_unique_per_gateway")]
        indexes = [
            models.Index(
                fields=["gateway", "provider_reference"],
                name="payment_provider_reference",
                condition=~Q(provider_reference=""),
            )
        ]

    def __str__(self) -> str:
        return f"{self.gateway}:{self.payment_id}"


class WebhookEvent(models.Model):
    """Every gateway event processed, once: the unique key turns a replay into a no-op."""

    gateway = models.CharField(max_length=32)
    event_id = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64)
    payment = models.ForeignKey(Payment, null=True, on_delete=models.PROTECT, related_name="events")
    received_at = models.DateTimeField()
    body = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["gateway", "event_id"], name="webhook_event_once")]

    def __str__(self) -> str:
        return f"{self.gateway}:{self.event_id}"


class KeyReveal(models.Model):
    """Evidence: every time an order's keys were shown, to whom and from where."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="reveals")
    at = models.DateTimeField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    device = models.CharField(max_length=64, blank=True)  # the device cookie's id (core.device); "" for the API
    channel = models.CharField(max_length=16)  # "page" or "api"

    def __str__(self) -> str:
        return f"reveal of order {self.order_id} at {self.at:%Y-%m-%d %H:%M:%S}"


# --- the ledger -----------------------------------------------------------------------------------


class AccountKind(models.TextChoices):
    GATEWAY_CLEARING = "gateway_clearing", _("Gateway clearing")
    ESCROW = "escrow", _("Escrow")
    MERCHANT_AVAILABLE = "merchant_available", _("Merchant available")
    MERCHANT_RESERVE = "merchant_reserve", _("Merchant reserve")
    PLATFORM_FEES = "platform_fees", _("Platform fees")
    SUSPENSE = "suspense", _("Suspense (payments under review)")
    # Refunds booked out of escrow, waiting for the gateway to confirm the money reached the buyer.
    BUYER_REFUNDS_PAYABLE = "buyer_refunds_payable", _("Refunds owed to buyers")
    # Withdrawals: pending credits are requests awaiting staff, posted credits were paid out.
    PAYOUTS = "payouts", _("Merchant payouts")


class LedgerAccount(models.Model):
    """Balances are caches of the transfers (verify_ledger replays them); change them only in ledger.py."""

    kind = models.CharField(max_length=32, choices=AccountKind.choices)
    merchant = models.ForeignKey("shop.Merchant", null=True, blank=True, on_delete=models.PROTECT)
    owner = models.CharField(max_length=64)  # "platform" or "merchant:<pk>": unique even without a merchant
    currency = models.CharField(max_length=3, choices=Currency.choices)
    debits_pending = models.BigIntegerField(default=0)
    debits_posted = models.BigIntegerField(default=0)
    credits_pending = models.BigIntegerField(default=0)
    credits_posted = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "owner", "currency"], name="ledger_account_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}/{self.owner}/{self.currency}"

    @property
    def credit_balance(self) -> int:
        """Posted credits less posted debits: what a liability account (escrow, merchant) holds."""
        return self.credits_posted - self.debits_posted


class TransferKind(models.TextChoices):
    SINGLE = "single", _("Posted")
    PENDING = "pending", _("Pending")
    POST_PENDING = "post_pending", _("Posts a pending transfer")
    VOID_PENDING = "void_pending", _("Voids a pending transfer")


class Transfer(models.Model):
    """An immutable movement of money between two accounts (TigerBeetle-style two-phase)."""

    transfer_id = models.CharField(max_length=120, unique=True)  # derived from its cause
    kind = models.CharField(max_length=16, choices=TransferKind.choices)
    debit_account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="+")
    credit_account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    pending = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="resolutions")
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="transfers")
    code = models.CharField(max_length=32)  # why: "payment", "share", "fee", "refund", …
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="transfer_amount_not_negative"),
            # A pending transfer is posted or voided at most once.
            models.UniqueConstraint(
                fields=["pending"],
                condition=Q(kind__in=["post_pending", "void_pending"]),
                name="transfer_pending_resolved_once",
            ),
        ]

    def __str__(self) -> str:
        return self.transfer_id


# --- refunds, reserves, withdrawals, proofs of liabilities -----------------------------------------


class KeyDisposition(models.TextChoices):
    RESTOCK = "restock", _("Return to stock")
    REVOKE = "revoke", _("Revoke")


class RefundStatus(models.TextChoices):
    REQUESTED = "requested", _("Requested at the gateway")
    SUCCEEDED = "succeeded", _("Paid back to the buyer")


REFUND_TRANSITIONS = Transitions({RefundStatus.REQUESTED: {RefundStatus.SUCCEEDED}})


class Refund(models.Model):
    """Money going back to a buyer: booked out of escrow at once, paid when the gateway confirms."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="refunds")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    key_count = models.PositiveIntegerField(default=0)
    card_key_pks = models.JSONField(default=list, blank=True)
    key_disposition = models.CharField(max_length=16, choices=KeyDisposition.choices, default=KeyDisposition.RESTOCK)
    # {"<card key pk>": why} for every key taken out of sale: "asked", "revealed" or "exported" (a key
    # someone may hold never goes back on sale, even when "return to stock" was asked).
    revoked_keys = models.JSONField(default=dict, blank=True)
    reason = models.CharField(max_length=64)
    note = models.CharField(_("reason"), max_length=500, blank=True)  # in the words of who asked
    status = models.CharField(max_length=16, choices=RefundStatus.choices, default=RefundStatus.REQUESTED)
    gateway = models.CharField(max_length=32)
    gateway_refund_id = models.CharField(max_length=64, null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField()
    succeeded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["gateway", "gateway_refund_id"],
                name="refund_unique_per_gateway",
                condition=Q(gateway_refund_id__isnull=False),
            ),
        ]
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")

    def __str__(self) -> str:
        return f"refund {self.pk} of order {self.order_id}"


class ClawbackKind(models.TextChoices):
    CHARGEBACK = "chargeback", _("Chargeback")
    PROVIDER_REFUND = "provider_refund", _("Refunded at the provider")
    REFUND = "refund", _("Refund after release")


class Clawback(models.Model):
    """Money taken back from an order's merchant (and the fee) after it was released to them: a
    provider's chargeback, a refund made at the provider's own dashboard, or a refund of a completed
    order. `share` came out of the merchant's available balance (after releasing `from_reserve` of
    their reserve early), `fee` out of the platform's fees; `share + fee = amount`, what the buyer got
    back (`escrow/clawbacks.py`; `verify_ledger` checks each part against the ledger)."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="clawbacks")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="clawbacks")
    merchant = models.ForeignKey("shop.Merchant", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=ClawbackKind.choices)
    gateway = models.CharField(max_length=32)
    reference = models.CharField(max_length=128)  # the provider's dispute or refund id, or "refund:<pk>"
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    share = models.PositiveBigIntegerField()
    fee = models.PositiveBigIntegerField()
    from_reserve = models.PositiveBigIntegerField(default=0)
    refund = models.OneToOneField(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="clawback")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["gateway", "reference"], name="clawback_once_per_reference")]
        verbose_name = _("clawback")
        verbose_name_plural = _("clawbacks")

    def __str__(self) -> str:
        return f"{self.kind} of order {self.order_id}"


class ReserveHold(models.Model):
    """Part of one release kept in the merchant's rolling reserve until `release_at`."""

    order = models.OneToOneField(Order, on_delete=models.PROTECT, related_name="reserve_hold")
    merchant = models.ForeignKey("shop.Merchant", on_delete=models.PROTECT, related_name="+")
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    held_at = models.DateTimeField()
    release_at = models.DateTimeField(db_index=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["release_at"], name="reserve_hold_open_idx", condition=Q(released_at__isnull=True))
        ]

    def __str__(self) -> str:
        return f"reserve of order {self.order_id}"


class PayoutAccount(models.Model):
    """Where a merchant's withdrawals are paid (a bank or wallet account they saved)."""

    merchant = models.ForeignKey("shop.Merchant", on_delete=models.PROTECT, related_name="payout_accounts")
    label = models.CharField(_("label"), max_length=64)
    holder_name = models.CharField(_("account holder"), max_length=100)
    # The account number or wallet id, padded and sealed under the merchant's data key, bound to this
    # row (see `number_seal`); only its last four characters are kept in the clear, for display.
    number_sealed = models.BinaryField(editable=False)
    number_last4 = models.CharField(max_length=4, editable=False)
    provider = models.CharField(_("bank or wallet"), max_length=64)
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = _("payout account")
        verbose_name_plural = _("payout accounts")

    def __str__(self) -> str:
        return f"{self.label} ({self.provider} {self.number_masked})"

    @property
    def number_masked(self) -> str:
        return f"…{self.number_last4}"

    def number_plaintext(self) -> str:
        """The full account number: the one way to read it (for staff paying a withdrawal out)."""
        padded = shop_crypto.data_key_open(
            merchant=self.merchant, sealed=self.number_sealed, aad=payout_number_aad(self.pk)
        )
        return core_crypto.unpad(padded).decode()

    def number_seal(self, number: str) -> None:
        """Set the sealed number and its last four characters (the row must have its pk)."""
        self.number_sealed = shop_crypto.data_key_seal(
            merchant=self.merchant, plaintext=core_crypto.pad(number.encode()), aad=payout_number_aad(self.pk)
        )
        self.number_last4 = number[-4:]


def payout_number_aad(payout_account_pk: int) -> bytes:
    return b"cardshop:payout-account-number:%d" % payout_account_pk


class WithdrawalStatus(models.TextChoices):
    REQUESTED = "requested", _("Waiting for approval")
    PAID = "paid", _("Paid")
    REJECTED = "rejected", _("Rejected")
    # Held by the risk engine (a new device or network, a fresh payout account, a security change):
    # the money is held as for a request; staff clear it in the review queue (→ requested) or reject it.
    PENDING_REVIEW = "pending_review", _("Held for review")


WITHDRAWAL_TRANSITIONS = Transitions(
    {
        WithdrawalStatus.PENDING_REVIEW: {WithdrawalStatus.REQUESTED, WithdrawalStatus.REJECTED},
        WithdrawalStatus.REQUESTED: {WithdrawalStatus.PAID, WithdrawalStatus.REJECTED},
    }
)


class Withdrawal(models.Model):
    merchant = models.ForeignKey("shop.Merchant", on_delete=models.PROTECT, related_name="withdrawals")
    payout_account = models.ForeignKey(PayoutAccount, on_delete=models.PROTECT, related_name="withdrawals")
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, choices=Currency.choices)
    status = models.CharField(
        max_length=16, choices=WithdrawalStatus.choices, default=WithdrawalStatus.REQUESTED, db_index=True
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)
    # The bank's or wallet's reference of the transfer staff made when approving.
    payout_reference = models.CharField(_("payout reference"), max_length=128, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("withdrawal")
        verbose_name_plural = _("withdrawals")

    def __str__(self) -> str:
        return f"withdrawal {self.pk}"


class LiabilityPublication(models.Model):
    """One published Merkle sum tree of what the platform owes, per currency."""

    currency = models.CharField(max_length=3, choices=Currency.choices)
    root_hash = models.CharField(max_length=64)
    total = models.BigIntegerField()
    funds_held = models.BigIntegerField()
    leaf_count = models.PositiveIntegerField()
    published_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-published_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.currency} {self.root_hash[:12]}…"


class LiabilityLeaf(models.Model):
    """One creditor's leaf; the nonce is what makes its public hash unlinkable to who it is."""

    publication = models.ForeignKey(LiabilityPublication, on_delete=models.CASCADE, related_name="leaves")
    position = models.PositiveIntegerField()
    entity = models.CharField(max_length=128)  # "merchant:<pk>" or "buyer:<e-mail>"
    merchant = models.ForeignKey("shop.Merchant", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    nonce = models.CharField(max_length=64)
    amount = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["publication", "position"], name="liability_leaf_position")]

    def __str__(self) -> str:
        return f"leaf {self.position} of {self.publication_id}"


# --- the front door for disputes (disputes_front.py) -------------------------------------------------


class DisputeActionKind(models.TextChoices):
    OPEN = "open", _("Dispute opened")
    RELEASE = "release", _("Released to the merchant")
    REFUND = "refund", _("Refunded")
    SPLIT = "split", _("Split")
    REPLACE_KEY = "replace_key", _("Key replaced")


class DisputeAction(models.Model):
    """One front-door action on an order, taken once per cause: a replay of the cause finds this row.

    For the actions that decide the order (release, refund, split), `refund_amount + share + fee` is
    what the buyer paid and each part is what the ledger booked (`verify_ledger` checks both).
    """

    cause = models.CharField(max_length=120, unique=True)  # the caller's, e.g. "dispute:12:decision:3"
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="dispute_actions")
    kind = models.CharField(max_length=16, choices=DisputeActionKind.choices)
    terms = models.JSONField(default=dict, blank=True)  # what was asked: keys, amount, buyer percent, key
    refund = models.ForeignKey(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    refund_amount = models.PositiveBigIntegerField(default=0)
    share = models.PositiveBigIntegerField(default=0)
    fee = models.PositiveBigIntegerField(default=0)
    replaced_key = models.ForeignKey(
        "shop.CardKey", null=True, blank=True, on_delete=models.PROTECT, related_name="replaced_by_actions"
    )
    replacement_key = models.ForeignKey(
        "shop.CardKey", null=True, blank=True, on_delete=models.PROTECT, related_name="replacing_actions"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.kind} on order {self.order_id} ({self.cause})"
