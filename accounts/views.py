"""Sign-in: the password step (Django's LoginView), then a code for users who have a device."""

from urllib.parse import urlencode

import django_otp
from django.contrib.auth import views as auth_views
from django.urls import reverse


class SignInView(auth_views.LoginView):
    """The password step. A user with a confirmed device (merchants and staff must have one) goes on
    to the verify page with `next`; their session counts as verified only after a code there."""

    template_name = "accounts/login.html"

    def get_success_url(self) -> str:
        url = super().get_success_url()  # already checked against `url_has_allowed_host_and_scheme`
        if django_otp.user_has_device(self.request.user, confirmed=True):
            return f"{reverse('security:verify')}?{urlencode({'next': url})}"
        return url
