import logging

from captcha.fields import CaptchaField
from django import forms
from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from accounts import account_services
from accounts.models import User
from core.mail import mail_send
from core.ratelimit import rate_limit_hit

logger = logging.getLogger(__name__)


class OtpCodeForm(forms.Form):
    code = forms.CharField(
        label=_("Code from your authenticator app (or a backup code)"),
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


class SignUpForm(forms.Form):
    """A buyer's sign-up: the checks themselves are `account_services.account_signup`'s."""

    email = forms.EmailField(label=_("E-mail address"), widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password = forms.CharField(
        label=_("Password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=_("At least 8 characters, not a common password, not only digits, not like your e-mail."),
    )
    language = forms.ChoiceField(label=_("Language"), choices=settings.LANGUAGES)


class SignUpChallengeForm(forms.Form):
    """The risk engine's challenge at sign-up (many sign-ups from one address, network or device): a
    captcha drawn by this server (django-simple-captcha), nothing loaded from a third party."""

    prefix = "challenge"
    captcha = CaptchaField(label=_("Type the letters in the picture"))


class LanguageForm(forms.Form):
    language = forms.ChoiceField(label=_("Language for e-mails"), choices=settings.LANGUAGES)


class TokenCreateForm(forms.Form):
    """A new API token needs the password again, and a fresh code where the account has two factors."""

    name = forms.CharField(label=_("Name"), max_length=100, required=False)
    password = forms.CharField(
        label=_("Your password"), strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )
    code = forms.CharField(
        label=_("Code from your authenticator app (if you use one)"),
        max_length=16,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )


class ShopPasswordResetForm(PasswordResetForm):
    """Django's reset form, mailing through `core.mail` (with `X-Shop-Event`) in the owner's language.

    Unlike Django's, it also reaches accounts whose password was switched off by "this wasn't me": they
    are exactly the ones that must be able to set a new one. The page says the same whether or not the
    address has an account; at most `RATE_LIMITS["email_link"]` links go to one account."""

    def get_users(self, email):
        return User.objects.filter(email__iexact=email, is_active=True).exclude(email="")

    def send_mail(self, subject_template_name, email_template_name, context, from_email, to_email, **kwargs):
        user = context["user"]
        if not rate_limit_hit(scope="email_link", identity=f"reset:{user.pk}").allowed:
            return  # someone flooding this mailbox with reset links; the page still looks the same
        with translation.override(user.language or settings.LANGUAGE_CODE):
            context = {**context, "url": account_services.password_reset_url(user)}
            subject = render_to_string(subject_template_name, context)
            body = render_to_string(email_template_name, context)
        account_services.password_reset_requested(user=user, now=timezone.now())
        try:
            mail_send(event="security.password_reset", subject=subject, body=body, to=[to_email])
        except Exception:  # the page must look the same either way (no hint that the address exists)
            logger.exception("accounts.email_failed", extra={"event": "security.password_reset", "user": user.pk})
