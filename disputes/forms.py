from django import forms
from django.utils.translation import gettext_lazy as _

from disputes.attachments import MAX_ATTACHMENTS
from disputes.models import STATEMENT_MAX_LENGTH, DisputeReason, MessageRole


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class ScreenshotsField(forms.FileField):
    """Up to 5 files; what they are is decided by `disputes.attachments`, not here."""

    widget = MultipleFileInput(attrs={"accept": "image/png,image/jpeg,image/webp"})

    def clean(self, data, initial=None):
        files = [f for f in (data or []) if f] if isinstance(data, list | tuple) else ([data] if data else [])
        if len(files) > MAX_ATTACHMENTS:
            raise forms.ValidationError(_("Up to %(max)d screenshots.") % {"max": MAX_ATTACHMENTS})
        return files


class DisputeOpenForm(forms.Form):
    reason = forms.ChoiceField(label=_("What is wrong?"), choices=DisputeReason.choices)
    statement = forms.CharField(
        label=_("Tell the merchant what happened"), max_length=STATEMENT_MAX_LENGTH, widget=forms.Textarea
    )
    keys = forms.TypedMultipleChoiceField(
        label=_("Which keys?"), coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )
    screenshots = ScreenshotsField(label=_("Screenshots (up to 5: PNG, JPEG or WebP, 5 MB each)"), required=False)

    def __init__(self, *args, key_pks=(), **kwargs):
        super().__init__(*args, **kwargs)
        # Numbered as on the order page, where the buyer sees the keys themselves.
        self.fields["keys"].choices = [
            (pk, _("Key %(number)d") % {"number": number}) for number, pk in enumerate(key_pks, start=1)
        ]
        if len(key_pks) < 2:
            del self.fields["keys"]


class MessageForm(forms.Form):
    body = forms.CharField(label=_("Your message"), max_length=STATEMENT_MAX_LENGTH, widget=forms.Textarea)
    screenshots = ScreenshotsField(label=_("Screenshots (up to 5: PNG, JPEG or WebP, 5 MB each)"), required=False)


class StatementForm(forms.Form):
    statement = forms.CharField(label=_("Your statement"), max_length=STATEMENT_MAX_LENGTH, widget=forms.Textarea)
    screenshots = ScreenshotsField(label=_("Screenshots (up to 5: PNG, JPEG or WebP, 5 MB each)"), required=False)


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
