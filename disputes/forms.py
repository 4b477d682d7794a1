from django import forms
from django.utils.translation import gettext_lazy as _

from disputes.attachments import MAX_ATTACHMENTS
from disputes.models import STATEMENT_MAX_LENGTH, DisputeReason


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
