from django.conf import settings
from django.db import models
from django.db.models.functions import Length
from django.db.models.lookups import LessThanOrEqual
from django.utils.translation import gettext_lazy as _

from core.transitions import Transitions

STATEMENT_MAX_LENGTH = 2000


class DisputeReason(models.TextChoices):
    KEY_INVALID = "key_invalid", _("The key is invalid")
    KEY_USED = "key_used", _("The key was already used")
    WRONG_PRODUCT = "wrong_product", _("Wrong product")
    OTHER = "other", _("Other")


class DisputeStatus(models.TextChoices):
    OPEN = "open", _("Waiting for the merchant")
    REPLACED = "replaced", _("Key replaced, waiting for the buyer")
    CONTESTED = "contested", _("Contested, waiting for the buyer")
    ESCALATED = "escalated", _("With staff for arbitration")
    RESOLVED = "resolved", _("Resolved")


class DisputeOutcome(models.TextChoices):
    REFUNDED = "refunded", _("Refunded to the buyer")
    RELEASED = "released", _("Released to the merchant")
    SPLIT = "split", _("Split between buyer and merchant")


S = DisputeStatus
DISPUTE_TRANSITIONS = Transitions(
    {
        # The merchant answers (replace, refund, contest) or is silent past the deadline (refund).
        S.OPEN: {S.REPLACED, S.CONTESTED, S.RESOLVED},
        # The buyer accepts or is silent (release), reopens once (open), or asks staff (escalated).
        S.REPLACED: {S.RESOLVED, S.OPEN, S.ESCALATED},
        # The buyer asks staff, or answered and the deadline passed (escalated); silence releases.
        S.CONTESTED: {S.ESCALATED, S.RESOLVED},
        S.ESCALATED: {S.RESOLVED},
    }
)
# Whose clock runs in each status: the party the sweeper decides against when it runs out.
MERCHANT_CLOCK = {S.OPEN}
BUYER_CLOCK = {S.REPLACED, S.CONTESTED}


class Dispute(models.Model):
    """A buyer's dispute over a delivered order; at most one per order. `deadline` is when the party
    whose turn it is must have answered (for `escalated`, the published arbitration deadline)."""

    order = models.OneToOneField("escrow.Order", on_delete=models.PROTECT, related_name="dispute")
    reason = models.CharField(_("reason"), max_length=16, choices=DisputeReason.choices)
    statement = models.TextField(_("statement"), max_length=STATEMENT_MAX_LENGTH)
    # The keys under dispute (after a replacement: the fresh keys, should the buyer reopen).
    keys = models.ManyToManyField("shop.CardKey", related_name="disputes")
    status = models.CharField(max_length=16, choices=DisputeStatus.choices, default=DisputeStatus.OPEN)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField()
    deadline = models.DateTimeField(db_index=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # The merchant's first answer (replace, refund or contest): the merchant's answer time in reputation.
    merchant_answered_at = models.DateTimeField(null=True, blank=True)
    reopen_count = models.PositiveSmallIntegerField(default=0)
    # The buyer answered the merchant's contest: at the buyer deadline it goes to staff, not to the merchant.
    buyer_answered = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=DisputeOutcome.choices, blank=True)
    buyer_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("dispute")
        verbose_name_plural = _("disputes")
        indexes = [models.Index(fields=["status", "deadline"], name="disputes_status_deadline")]

    def __str__(self) -> str:
        return f"dispute {self.pk}"


class MessageRole(models.TextChoices):
    BUYER = "buyer", _("Buyer")
    MERCHANT = "merchant", _("Merchant")
    STAFF = "staff", _("Staff")
    SHOP = "shop", _("Shop")


class DisputeMessage(models.Model):
    """One message on a dispute; `author` is empty for a guest buyer and for the shop's own notes."""

    dispute = models.ForeignKey(Dispute, on_delete=models.PROTECT, related_name="messages")
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    body = models.TextField(max_length=STATEMENT_MAX_LENGTH)
    # A staff question to one party restarts that party's clock.
    question_for = models.CharField(max_length=16, choices=MessageRole.choices, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["pk"]
        verbose_name = _("dispute message")
        verbose_name_plural = _("dispute messages")

    def __str__(self) -> str:
        return f"{self.role} on dispute {self.dispute_id}"


RATING_COMMENT_MAX_LENGTH = 500


class Rating(models.Model):
    """A buyer's rating of the merchant for one completed order: 1 to 5 stars, at most one per order."""

    order = models.OneToOneField("escrow.Order", on_delete=models.PROTECT, related_name="rating")
    merchant = models.ForeignKey("shop.Merchant", on_delete=models.PROTECT, related_name="ratings")
    stars = models.PositiveSmallIntegerField(_("stars"))
    comment = models.TextField(_("comment"), max_length=RATING_COMMENT_MAX_LENGTH, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("rating")
        verbose_name_plural = _("ratings")
        constraints = [
            models.CheckConstraint(condition=models.Q(stars__gte=1, stars__lte=5), name="rating_stars_1_to_5"),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("comment"), RATING_COMMENT_MAX_LENGTH),
                name="rating_comment_max_length",
            ),
        ]
        indexes = [models.Index(fields=["merchant", "-created_at"], name="rating_merchant_latest")]

    def __str__(self) -> str:
        return f"{self.stars} stars on order {self.order_id}"


class Attachment(models.Model):
    """A screenshot on a dispute, re-encoded and stored under `DISPUTE_FILES_ROOT` (outside the static and
    media roots); it is served only by `disputes.views.attachment`, to the two parties and staff."""

    dispute = models.ForeignKey(Dispute, on_delete=models.PROTECT, related_name="attachments")
    role = models.CharField(_("uploaded by"), max_length=16, choices=MessageRole.choices)
    stored_name = models.CharField(max_length=64, unique=True)
    content_type = models.CharField(max_length=32)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["pk"]
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")

    def __str__(self) -> str:
        return f"attachment {self.pk} on dispute {self.dispute_id}"
