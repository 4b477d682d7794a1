from captcha.fields import CaptchaField
from django import forms
from django.utils.translation import gettext_lazy as _

from core.money import Currency

GATEWAY_LABELS = {
    "sandbox": _("Sandbox (test payments)"),
    "epay": _("Alipay / WeChat Pay / QQ Wallet (epay)"),
    "alipay": _("Alipay"),
    "stripe": _("Card (Stripe)"),
}


class CheckoutForm(forms.Form):
    email = forms.EmailField(label=_("E-mail for your receipt and order link"))
    quantity = forms.IntegerField(label=_("Quantity"), min_value=1)
    # The gateways that can take this product's currency; shown as a choice only when there are two or more.
    gateway = forms.ChoiceField(label=_("Pay with"), required=False, widget=forms.RadioSelect)
    # Checked and counted on the server at checkout (escrow.services.order_place); the page never
    # sends a price or a total, and one it did send would not be read.
    coupon = forms.CharField(
        label=_("Coupon code (optional)"),
        max_length=32,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}),
    )

    def __init__(self, *args, max_quantity: int, gateways: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_quantity = max_quantity
        self.fields["quantity"].widget.attrs.update({"min": 1, "max": max_quantity})
        gateways = gateways or []
        self.fields["gateway"].choices = [(name, GATEWAY_LABELS.get(name, name)) for name in gateways]
        if gateways:
            self.fields["gateway"].initial = gateways[0]
        if len(gateways) < 2:
            self.fields["gateway"].widget = forms.HiddenInput()

    @property
    def offers_gateway_choice(self) -> bool:
        return len(self.fields["gateway"].choices) > 1

    def clean_quantity(self) -> int:
        quantity = self.cleaned_data["quantity"]
        if quantity > self.max_quantity:
            raise forms.ValidationError(_("At most %(max)d per order."), params={"max": self.max_quantity})
        return quantity


class CaptchaChallengeForm(forms.Form):
    """The risk engine's challenge for a guest (or a user without a second factor): a captcha drawn by
    this server (django-simple-captcha), nothing loaded from a third party."""

    prefix = "challenge"
    captcha = CaptchaField(label=_("Type the letters in the picture"))


class CodeChallengeForm(forms.Form):
    """The challenge for a signed-in user who has a second factor: a fresh code from their app."""

    prefix = "challenge"
    code = forms.CharField(
        label=_("Code from your authenticator app (or a backup code)"),
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


class OrderLookupForm(forms.Form):
    email = forms.EmailField(label=_("E-mail you ordered with"), max_length=254)
    order_number = forms.IntegerField(label=_("Order number"), min_value=1, max_value=2**63 - 1)


class StatementFilterForm(forms.Form):
    since = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label=_("To (inclusive)"), required=False, widget=forms.DateInput(attrs={"type": "date"}))


class PayoutAccountForm(forms.Form):
    label = forms.CharField(label=_("Label"), max_length=64)
    provider = forms.CharField(label=_("Bank or wallet"), max_length=64)
    holder_name = forms.CharField(label=_("Account holder"), max_length=100)
    account_number = forms.CharField(label=_("Account number or wallet id"), max_length=64)
    code = forms.CharField(
        label=_("Code from your authenticator app (or a backup code)"),
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


class WithdrawalForm(forms.Form):
    payout_account = forms.ModelChoiceField(label=_("Pay to"), queryset=None)
    amount = forms.DecimalField(label=_("Amount"), min_value=0, decimal_places=2, max_digits=14)
    currency = forms.ChoiceField(label=_("Currency"), choices=())
    code = forms.CharField(
        label=_("Code from your authenticator app (or a backup code)"),
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def __init__(self, *args, merchant, **kwargs):
        from core.money import Currency
        from escrow.models import PayoutAccount

        super().__init__(*args, **kwargs)
        self.fields["payout_account"].queryset = PayoutAccount.objects.filter(merchant=merchant).order_by("pk")
        self.fields["currency"].choices = Currency.choices

    def amount_minor(self) -> int:
        from core.money import from_major

        return from_major(str(self.cleaned_data["amount"]), self.cleaned_data["currency"])


class RefundForm(forms.Form):
    keys = forms.MultipleChoiceField(
        label=_("Keys to refund (none chosen: the whole order)"), required=False, widget=forms.CheckboxSelectMultiple
    )
    disposition = forms.ChoiceField(label=_("Refunded keys"), choices=())
    note = forms.CharField(label=_("Reason for the refund"), max_length=500, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, key_pks: list[int], note_required: bool, **kwargs):
        from escrow.models import KeyDisposition

        super().__init__(*args, **kwargs)
        self.fields["keys"].choices = [(str(pk), _("Key #%(pk)s") % {"pk": pk}) for pk in key_pks]
        self.fields["disposition"].choices = KeyDisposition.choices
        self.fields["note"].required = note_required


class OrderReviewForm(forms.Form):
    decision = forms.ChoiceField(
        label=_("Decision"),
        choices=[("approve", _("Approve: deliver the order")), ("reject", _("Reject: refund what was paid"))],
        widget=forms.RadioSelect,
    )
    note = forms.CharField(
        label=_("Reason (required to reject)"), max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("decision") == "reject" and not cleaned.get("note", "").strip():
            self.add_error("note", _("Say why the order is rejected and refunded."))
        return cleaned


class WithdrawalApproveForm(forms.Form):
    payout_reference = forms.CharField(
        label=_("Reference of the payment you made (from the bank or wallet)"), max_length=128
    )
    confirm = forms.BooleanField(label=_("I paid exactly this amount to exactly this account."))


class ProofUploadForm(forms.Form):
    proof = forms.FileField(label=_("Your proof file (JSON)"))


class MerchantOrderFilterForm(forms.Form):
    """The merchant's order list: by status, product and date; `q` an order number or a buyer's e-mail."""

    q = forms.CharField(label=_("Order number or e-mail"), required=False, max_length=254)
    status = forms.ChoiceField(label=_("Status"), required=False)
    product = forms.TypedChoiceField(label=_("Product"), required=False, coerce=int, empty_value=None)
    since = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label=_("To (inclusive)"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, products, **kwargs):
        from escrow.models import OrderStatus

        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", _("Any status")), *OrderStatus.choices]
        self.fields["product"].choices = [("", _("Any product")), *((p.pk, p.title) for p in products)]


class RefundPaidByHandForm(forms.Form):
    refund = forms.IntegerField(widget=forms.HiddenInput)
    reference = forms.CharField(label=_("Reference of the payment you made to the buyer"), max_length=64)


class SpendingLimitForm(forms.Form):
    currency = forms.ChoiceField(label=_("Currency"), choices=Currency.choices)
    amount = forms.DecimalField(
        label=_("Daily limit"),
        required=False,
        min_value=0,
        decimal_places=2,
        max_digits=14,
        help_text=_("Leave empty for no limit."),
    )
