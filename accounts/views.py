"""Sign-in (the password step, then a code for users who have a device), sign-up, e-mail verification,
password recovery and change, and the e-mailed "this wasn't me" and unlock links."""

from urllib.parse import urlencode

import django_otp
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django.views.i18n import set_language

import risk
from accounts import account_services
from accounts.forms import ShopPasswordResetForm, SignUpChallengeForm, SignUpForm
from accounts.lockout import username_of
from accounts.models import SignInMethod, User
from core.client_ip import client_ip
from core.device import device_id
from core.ratelimit import rate_limit_hit

BACKEND = "accounts.backends.EmailOrUsernameBackend"


def sign_in_note(request, *, user: User, method: str, success: bool, reason: str = ""):
    """Record a sign-in attempt of `request` on `user`'s account (history, new-device alert)."""
    return account_services.sign_in_record(
        user=user,
        now=timezone.now(),
        ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", ""),
        device=device_id(request),
        method=method,
        success=success,
        reason=reason,
    )


class SignInView(auth_views.LoginView):
    """The password step (by username or e-mail). A user with a confirmed device (merchants and staff
    must have one) goes on to the verify page with `next`; their session counts as verified only after
    a code there. Every attempt on a real account is recorded."""

    template_name = "accounts/login.html"

    def get_initial(self):
        return {"username": self.request.GET.get("username", "")}

    def form_valid(self, form):
        # The risk engine assesses each sign-in (`login`) and learns the device and network the person
        # uses (what "a withdrawal from a new device" is measured against). A block or a frozen account
        # refuses with a neutral message; a challenge is the second factor users with a device get anyway.
        user = form.get_user()
        decision = risk.assess(
            event="login", context=risk.context_from_request(self.request, user=user), now=timezone.now()
        )
        try:
            risk.decision_enforce(decision=decision, challenge_passed=True)
        except risk.RiskRefused as refusal:
            form.add_error(None, str(refusal))
            sign_in_note(self.request, user=user, method=SignInMethod.PAGE, success=False, reason="risk")
            return super().form_invalid(form)
        risk.decision_subject_set(decision=decision, subject=("user", user.pk))
        response = super().form_valid(form)
        sign_in_note(self.request, user=user, method=SignInMethod.PAGE, success=True)
        return response

    def form_invalid(self, form):
        name = username_of(self.request)
        owner = User.objects.filter(username=name).first() if name else None
        if owner is not None:
            locked = getattr(self.request, "axes_locked_out", False)
            reason = "locked_out" if locked else ("inactive" if not owner.is_active else "bad_password")
            sign_in_note(self.request, user=owner, method=SignInMethod.PAGE, success=False, reason=reason)
        return super().form_invalid(form)

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
        language = request.POST.get("language", "")
        if language in dict(settings.LANGUAGES) and language != request.user.language:
            account_services.account_language_set(user=request.user, language=language, now=timezone.now())
    return response


def signup(request):
    """A buyer signs up: e-mail, password, language. Signed in at once; the e-mail waits for its link.

    The risk engine assesses the sign-up (`signup`: sign-ups per address, network and device) before
    the account exists: a challenge shows a captcha, answered with the next submission; a block refuses
    with a neutral message (403). The decision names the new account."""
    if request.user.is_authenticated:
        return redirect("security:overview")
    form = SignUpForm(request.POST or None, initial={"language": translation.get_language()})
    challenge, challenge_passed = _signup_challenge_answer(request)
    if request.method == "POST" and form.is_valid():
        ip = client_ip(request)
        if not rate_limit_hit(scope="signup", identity=ip).allowed:
            form.add_error(None, _("Too many sign-ups from your network. Try again later."))
        else:
            now = timezone.now()
            try:
                decision = risk.signup_assess(
                    request=request, email=form.cleaned_data["email"], now=now, challenge_passed=challenge_passed
                )
            except risk.RiskRefused as refusal:
                context = {"form": form}
                if refusal.code == "challenge_required":
                    # A wrong answer keeps its error; a first challenge starts with an empty form.
                    context["challenge"] = challenge if challenge is not None else SignUpChallengeForm()
                form.add_error(None, str(refusal))
                return render(request, "accounts/signup.html", context, status=403)
            try:
                user = account_services.account_signup(
                    email=form.cleaned_data["email"],
                    password=form.cleaned_data["password"],
                    language=form.cleaned_data["language"],
                    now=now,
                    ip=ip,
                )
            except account_services.AccountRefused as refused:
                field = account_services.AccountRefused.code_fields.get(refused.code)
                form.add_error(field, str(refused))
            else:
                passed = challenge_passed
                risk.decision_subject_set(decision=decision, subject=("user", user.pk), challenge_passed=passed)
                login(request, user, backend=BACKEND)
                sign_in_note(request, user=user, method=SignInMethod.SIGNUP, success=True)
                messages.success(
                    request,
                    _("Welcome! We sent a link to %(email)s: open it to confirm your address.") % {"email": user.email},
                )
                response = redirect("security:overview")
                response.set_cookie(settings.LANGUAGE_COOKIE_NAME, user.language, samesite="Lax")
                return response
    return render(request, "accounts/signup.html", {"form": form})


def _signup_challenge_answer(request) -> tuple[SignUpChallengeForm | None, bool]:
    """The captcha the person answered with this sign-up (None if none), and whether it passed."""
    if request.method != "POST" or not any(name.startswith("challenge-") for name in request.POST):
        return None, False
    challenge = SignUpChallengeForm(request.POST)
    return challenge, challenge.is_valid()


def verify_email(request, token: str):
    try:
        user = account_services.email_verify(token=token, now=timezone.now())
    except account_services.AccountRefused as refused:
        return render(request, "accounts/link_result.html", {"error": str(refused)}, status=400)
    messages.success(request, _("Your e-mail address %(email)s is confirmed.") % {"email": user.email})
    if request.user.is_authenticated and request.user.pk == user.pk:
        return redirect("security:overview")
    return redirect(f"{reverse('accounts:login')}?{urlencode({'username': user.email})}")


@login_required
@require_POST
def verify_email_resend(request):
    user = request.user
    if user.is_email_verified:
        messages.info(request, _("Your e-mail address is already confirmed."))
    elif not rate_limit_hit(scope="email_link", identity=f"user:{user.pk}").allowed:
        messages.error(request, _("We sent several links already. Wait a while, then try again."))
    else:
        account_services.email_verification_send(user=user)  # outside a transaction: sent at once
        messages.success(request, _("We sent a new link to %(email)s.") % {"email": user.email})
    return redirect("security:overview")


def not_me(request, token: str):
    """The alert's "this wasn't me": a page with one button (a mail scanner opening the link must not
    sign the owner out); the button signs out everywhere, revokes the tokens, forces a new password."""
    try:
        user = account_services.not_me_check(token=token)
    except account_services.AccountRefused as refused:
        return render(request, "accounts/link_result.html", {"error": str(refused)}, status=400)
    if request.method == "POST":
        try:
            account_services.account_compromise_report(token=token, now=timezone.now())
        except account_services.AccountRefused as refused:
            return render(request, "accounts/link_result.html", {"error": str(refused)}, status=400)
        if request.user.is_authenticated and request.user.pk == user.pk:
            logout(request)
        return render(
            request,
            "accounts/link_result.html",
            {
                "done": _(
                    "Done. Every session of your account is signed out, its API tokens are revoked and its "
                    "password no longer works. We e-mailed you a link to choose a new password."
                )
            },
        )
    return render(request, "accounts/not_me.html", {"account": user})


def unlock(request, token: str):
    if request.method == "POST":
        try:
            user = account_services.account_unlock(token=token, now=timezone.now())
        except account_services.AccountRefused as refused:
            return render(request, "accounts/link_result.html", {"error": str(refused)}, status=400)
        messages.success(request, _("Your account is unlocked. Sign in again."))
        return redirect(f"{reverse('accounts:login')}?{urlencode({'username': user.get_username()})}")
    return render(request, "accounts/unlock.html")


# --- password recovery and change (Django's views, the shop's templates and mail) ------------------------


class PasswordResetView(auth_views.PasswordResetView):
    """The same answer for every address (registered or not): "if it has an account, a link is on its way"."""

    form_class = ShopPasswordResetForm
    template_name = "accounts/password_reset.html"
    subject_template_name = "accounts/password_reset_subject.txt"
    email_template_name = "accounts/password_reset_email.txt"
    success_url = reverse_lazy("accounts:password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password_reset_complete")

    def form_valid(self, form):
        from axes.utils import reset

        response = super().form_valid(form)
        account_services.password_changed(user=form.user, now=timezone.now(), how="reset")
        reset(username=form.user.get_username())  # the mailbox's owner proved who they are: lift any lockout
        return response


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"


class PasswordChangeView(auth_views.PasswordChangeView):
    """A new password ends every session (this one too) and every API token: sign in again with it."""

    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("accounts:login")

    def form_valid(self, form):
        response = super().form_valid(form)
        account_services.password_changed(user=form.user, now=timezone.now(), how="change")
        logout(self.request)
        messages.success(self.request, _("Your password is changed. Every session and API token ended: sign in again."))
        return response
