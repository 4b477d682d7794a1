"""Sign-in: the password step (Django's LoginView), then a code for users who have a device."""

from urllib.parse import urlencode

import django_otp
from django.contrib.auth import views as auth_views
from django.urls import reverse
from django.utils import timezone

import risk


class SignInView(auth_views.LoginView):
    """The password step. A user with a confirmed device (merchants and staff must have one) goes on
    to the verify page with `next`; their session counts as verified only after a code there.

    Each sign-in is assessed by the risk engine (`login`), which also learns the device and network
    the person uses (what "a withdrawal from a new device" is measured against). A block or a frozen
    account refuses the sign-in with a neutral message; a challenge is the second factor that users
    with a device are asked for anyway."""

    template_name = "accounts/login.html"

    def form_valid(self, form):
        user = form.get_user()
        decision = risk.assess(
            event="login", context=risk.context_from_request(self.request, user=user), now=timezone.now()
        )
        try:
            risk.decision_enforce(decision=decision, challenge_passed=True)
        except risk.RiskRefused as refusal:
            form.add_error(None, str(refusal))
            return self.form_invalid(form)
        risk.decision_subject_set(decision=decision, subject=("user", user.pk))
        return super().form_valid(form)

    def get_success_url(self) -> str:
        url = super().get_success_url()  # already checked against `url_has_allowed_host_and_scheme`
        if django_otp.user_has_device(self.request.user, confirmed=True):
            return f"{reverse('security:verify')}?{urlencode({'next': url})}"
        return url
