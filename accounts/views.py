"""Sign-in: the password step (Django's LoginView), then a code for users who have a device."""

from urllib.parse import urlencode

import django_otp
from django.contrib.auth import views as auth_views
from django.urls import reverse
from django.views.decorators.http import require_POST
from django.views.i18n import set_language

from accounts.services import user_language_set


class SignInView(auth_views.LoginView):
    """The password step. A user with a confirmed device (merchants and staff must have one) goes on
    to the verify page with `next`; their session counts as verified only after a code there."""

    template_name = "accounts/login.html"

    def get_success_url(self) -> str:
        url = super().get_success_url()  # already checked against `url_has_allowed_host_and_scheme`
        if django_otp.user_has_device(self.request.user, confirmed=True):
            return f"{reverse('security:verify')}?{urlencode({'next': url})}"
        return url


@require_POST
def language_set(request):
    """Django's language switch (the cookie, then back to `next`), and for a signed-in user the choice is
    kept on their account, so it follows them to every device they sign in on."""
    response = set_language(request)
    if request.user.is_authenticated:
        user_language_set(user=request.user, language=request.POST.get("language", ""))
    return response
