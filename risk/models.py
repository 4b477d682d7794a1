"""Rules, block lists, decisions with their reasons, the review queue, and the engine's own memory
(devices and networks seen per actor, velocity hits when the cache is not Redis)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from core.transitions import Transitions
from risk.context import EVENTS


class Event(models.TextChoices):
    SIGNUP = "signup", _("Sign-up")
    LOGIN = "login", _("Sign-in")
    CHECKOUT = "checkout", _("Checkout")
    PAYMENT = "payment", _("Payment confirmed")
    DISPUTE = "dispute", _("Dispute opened")
    WITHDRAWAL = "withdrawal", _("Withdrawal")
    PAYOUT_ACCOUNT_CHANGE = "payout_account_change", _("Payout account change")


assert tuple(Event.values) == EVENTS


class RuleOutcome(models.TextChoices):
    ALLOW = "allow", _("Allow")
    CHALLENGE = "challenge", _("Challenge (captcha or second factor)")
    REVIEW = "review", _("Hold for staff review")
    BLOCK = "block", _("Block")
    FREEZE = "freeze", _("Block and freeze the account")


class Comparison(models.TextChoices):
    GTE = "gte", "≥"
    GT = "gt", ">"
    LTE = "lte", "≤"
    LT = "lt", "<"
    EQ = "eq", "="


class Rule(models.Model):
    """If `signal` compared with `threshold` holds for an act of `event`, the act gets `outcome`.

    Evaluated harshest outcome first (freeze and block, review, challenge, allow), then by pk: the
    first rule that matches decides. Staff edit rules in the admin; every change is audited."""

    event = models.CharField(_("event"), max_length=32, choices=Event.choices)
    signal = models.CharField(_("signal"), max_length=80)
    comparison = models.CharField(_("comparison"), max_length=4, choices=Comparison.choices)
    threshold = models.FloatField(_("threshold"))
    outcome = models.CharField(_("outcome"), max_length=16, choices=RuleOutcome.choices)
    is_active = models.BooleanField(_("active"), default=True)
    description = models.CharField(_("why, in plain words"), max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["event", "pk"]
        verbose_name = _("risk rule")
        verbose_name_plural = _("risk rules")
        indexes = [models.Index(fields=["event"], condition=Q(is_active=True), name="risk_rule_active_event")]

    def __str__(self) -> str:
        return f"{self.event}: {self.signal} {self.get_comparison_display()} {self.threshold:g} → {self.outcome}"

    def matches(self, value) -> bool:
        if value is None:
            return False
        value = float(value)
        return {
            Comparison.GTE: value >= self.threshold,
            Comparison.GT: value > self.threshold,
            Comparison.LTE: value <= self.threshold,
            Comparison.LT: value < self.threshold,
            Comparison.EQ: value == self.threshold,
        }[self.comparison]


class BlockKind(models.TextChoices):
    EMAIL = "email", _("E-mail (exact, or a pattern such as *@example.com or *@*.example.com)")
    IP = "ip", _("IP address or CIDR range")
    DEVICE = "device", _("Device id")
    PAYOUT_ACCOUNT = "payout_account", _("Payout account number")


class BlockEntry(models.Model):
    """Consulted before any rule: a match blocks the act. Expired entries are ignored, never deleted."""

    kind = models.CharField(_("kind"), max_length=16, choices=BlockKind.choices)
    # E-mails lower-cased; payout account numbers as their keyed hash (risk.blocklist.payout_digest).
    value = models.CharField(_("value"), max_length=254)
    reason = models.CharField(_("reason"), max_length=300)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("block-list entry")
        verbose_name_plural = _("block list")
        indexes = [models.Index(fields=["kind", "value"], name="risk_block_kind_value")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.value}"


class Decision(models.Model):
    """One assessment: what was asked, what every signal said, which rule decided, and about what."""

    at = models.DateTimeField(db_index=True)
    event = models.CharField(max_length=32, choices=Event.choices)
    outcome = models.CharField(max_length=16, choices=RuleOutcome.choices)
    score = models.PositiveSmallIntegerField(default=0)  # the anomaly score, 0 to 100
    rule = models.ForeignKey(
        Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="decisions", db_index=False
    )
    # [{"rule", "signal", "value", "threshold"}]: the rule (or block entry, or freeze) that decided.
    reasons = models.JSONField(default=list, blank=True)
    signals = models.JSONField(default=dict, blank=True)
    subject_type = models.CharField(max_length=16, blank=True)
    subject_id = models.CharField(max_length=64, blank=True)
    actor = models.CharField(max_length=300, blank=True)  # "user:<pk>" or "email:<address>"
    email = models.CharField(max_length=254, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    network = models.CharField(max_length=64, blank=True)
    device = models.CharField(max_length=64, blank=True)
    amount = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    challenge_passed = models.BooleanField(default=False)

    class Meta:
        ordering = ["-pk"]
        verbose_name = _("risk decision")
        verbose_name_plural = _("risk decisions")
        indexes = [
            models.Index(fields=["subject_type", "subject_id"], name="risk_decision_subject"),
            models.Index(fields=["actor", "event", "at"], name="risk_decision_actor"),
            # Nearly every decision allows and names no rule (one per checkout and per payment): these two
            # hold only the others, for a staff filter on an outcome and for a rule's deletion, so such a
            # decision updates neither (nor the LIKE index Django made for `outcome`, which nothing used).
            models.Index(fields=["outcome"], name="risk_decision_not_allowed", condition=~models.Q(outcome="allow")),
            models.Index(fields=["rule"], name="risk_decision_rule", condition=models.Q(rule__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"decision {self.pk}: {self.event} → {self.outcome}"


class ReviewKind(models.TextChoices):
    ORDER = "order", _("Held order")
    WITHDRAWAL = "withdrawal", _("Held withdrawal")
    DISPUTE = "dispute", _("Flagged dispute")
    USER = "user", _("Frozen account")
    MERCHANT = "merchant", _("Flagged merchant")


class ReviewStatus(models.TextChoices):
    OPEN = "open", _("Waiting for staff")
    APPROVED = "approved", _("Approved")
    REJECTED = "rejected", _("Rejected")


REVIEW_TRANSITIONS = Transitions({ReviewStatus.OPEN: {ReviewStatus.APPROVED, ReviewStatus.REJECTED}})


class ReviewItem(models.Model):
    """Something held for staff: an order, a withdrawal, a dispute, a frozen account, a merchant."""

    kind = models.CharField(max_length=16, choices=ReviewKind.choices)
    subject_id = models.CharField(max_length=64)
    email = models.CharField(max_length=254, blank=True)
    reasons = models.JSONField(default=list, blank=True)
    decision = models.ForeignKey(Decision, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.OPEN)
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("review item")
        verbose_name_plural = _("review queue")
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject_id"], condition=Q(status="open"), name="risk_review_one_open_per_subject"
            )
        ]
        indexes = [models.Index(fields=["kind", "subject_id"], name="risk_review_subject")]

    def __str__(self) -> str:
        return f"review {self.pk}: {self.kind} {self.subject_id} ({self.status})"


class MerchantReserve(models.Model):
    """A merchant's rolling reserve raised by risk (dispute rate); lifted when staff approve them."""

    merchant = models.ForeignKey("shop.Merchant", on_delete=models.PROTECT, related_name="+")
    reserve_percent = models.DecimalField(max_digits=5, decimal_places=2)
    reason = models.CharField(max_length=300)
    raised_at = models.DateTimeField()
    lifted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant"], condition=Q(lifted_at__isnull=True), name="risk_reserve_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"merchant {self.merchant_id}: reserve {self.reserve_percent}%"


class SeenIdentity(models.Model):
    """Risk's own memory of the devices and networks each actor used: "new device" reads it."""

    actor = models.CharField(max_length=300)
    kind = models.CharField(max_length=8)  # "device" or "network"
    value = models.CharField(max_length=64)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["actor", "kind", "value"], name="risk_seen_once")]

    def __str__(self) -> str:
        return f"{self.actor} {self.kind} {self.value}"


class VelocityHit(models.Model):
    """One counted act in a sliding window, when the cache is not Redis (Redis keeps sorted sets)."""

    key = models.CharField(max_length=120)
    member = models.CharField(max_length=64)
    weight = models.PositiveIntegerField(default=1)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["key", "at"], name="risk_velocity_key_at")]

    def __str__(self) -> str:
        return f"{self.key} at {self.at:%Y-%m-%d %H:%M:%S}"
