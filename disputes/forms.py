from django import forms
from django.utils.translation import gettext_lazy as _

from disputes.models import STATEMENT_MAX_LENGTH, MessageRole


class DecisionForm(forms.Form):
    """Staff's decision on an escalated dispute; the service checks every rule again."""

    outcome = forms.ChoiceField(
        label=_("Decision"),
        choices=[
            ("refund", _("Full refund to the buyer")),
            ("release", _("Full release to the merchant")),
            ("split", _("Split: the buyer gets a percentage")),
        ],
        widget=forms.RadioSelect(attrs={"class": "js-outcome"}),
    )
    buyer_percent = forms.IntegerField(
        label=_("The buyer's percentage (split only)"), min_value=0, max_value=100, required=False
    )
    reason = forms.CharField(
        label=_("Reason (shown to both parties)"), max_length=STATEMENT_MAX_LENGTH, widget=forms.Textarea
    )
    confirm = forms.BooleanField(label=_("I understand that this moves money and cannot be undone."))

    def clean(self):
        data = super().clean()
        if data.get("outcome") == "split" and data.get("buyer_percent") is None:
            self.add_error("buyer_percent", _("Give the buyer's percentage for a split (0 to 100)."))
        return data


class QuestionForm(forms.Form):
    question_for = forms.ChoiceField(
        label=_("Ask"), choices=[(MessageRole.BUYER, _("the buyer")), (MessageRole.MERCHANT, _("the merchant"))]
    )
    body = forms.CharField(label=_("Question"), max_length=STATEMENT_MAX_LENGTH, widget=forms.Textarea)
