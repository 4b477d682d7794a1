"""The signed-in user's security pages: what the account looks like (sign-ins, sessions, API tokens,
second factor, e-mail, language), the sign-in's second step, enrol a TOTP app (QR code), backup codes,
and "Download my activity". Everything here is the signed-in person's own: another's id answers 404."""

from base64 import b32encode
from urllib.parse import urlencode

import django_otp
import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import account_services, hooks, selectors, services
from accounts.forms import LanguageForm, OtpCodeForm, TokenCreateForm
from accounts.models import AccountApiToken
from accounts.sessions import current_session_id
from accounts.two_factor import next_url_safe
from core.client_ip import client_ip


def _overview(request, *, token_form=None, new_token: str | None = None, status: int = 200):
    user, now = request.user, timezone.now()
    return render(
        request,
        "accounts/security.html",
        {
            "device": services.totp_device_confirmed(user),
            "backup_codes_left": services.backup_codes_left(user),
            "second_factor_required": bool(hooks.roles_of(user) & {"merchant", "staff"}),
            "sign_ins": selectors.sign_ins_recent(user=user, now=now)[:200],
            "history_days": settings.ACCOUNT_HISTORY_DAYS,
            "sessions": selectors.sessions_active(user=user, now=now),
            "current_session": current_session_id(request),
            "tokens": selectors.api_tokens_of(user=user),
            "recent_activity": selectors.activity_recent(user=user, now=now),
            "token_form": token_form or TokenCreateForm(),
            "new_token": new_token,
            "language_form": LanguageForm(initial={"language": user.language or settings.LANGUAGE_CODE}),
        },
        status=status,
    )


@login_required
def overview(request):
    return _overview(request)


@login_required
@require_POST
def session_end(request, public_id: str):
    if not account_services.session_end(user=request.user, public_id=public_id, now=timezone.now()):
        raise Http404
    messages.success(request, _("That session is signed out."))
    return redirect("security:overview")


@login_required
@require_POST
def sessions_end_all(request):
    account_services.sessions_end_all(user=request.user, now=timezone.now())
    messages.success(request, _("Every session of your account is signed out, this one too."))
    return redirect("accounts:login")


@login_required
@require_POST
def token_create(request):
    """A new API token, shown once. Asks for the password again, and a fresh code where the account
    uses (or, for merchants and staff, must use) a second factor."""
    user = request.user
    form = TokenCreateForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        if authenticate(request, username=user.get_username(), password=data["password"]) is None:
            form.add_error("password", _("That is not your password."))
        elif account_services.second_factor_needed(user):
            try:
                services.otp_fresh_code_check(user=user, code=data["code"])
            except services.TwoFactorRequired:
                form.add_error("code", _("API tokens need two-factor authentication: set it up first."))
            except services.TwoFactorInvalid:
                form.add_error("code", _("That code is wrong or was already used."))
    if form.is_valid():
        _record, secret = account_services.account_api_token_create(
            user=user, name=form.cleaned_data["name"], now=timezone.now(), ip=client_ip(request)
        )
        return _overview(request, new_token=secret)
    return _overview(request, token_form=form, status=400)


@login_required
@require_POST
def token_revoke(request, pk: int):
    token = get_object_or_404(AccountApiToken, pk=pk, user=request.user)
    account_services.account_api_token_revoke(token=token, actor=request.user, now=timezone.now())
    messages.success(request, _("The token %(name)s is revoked.") % {"name": token.name})
    return redirect("security:overview")


@login_required
@require_POST
def language_set(request):
    form = LanguageForm(request.POST)
    if form.is_valid():
        account_services.account_language_set(
            user=request.user, language=form.cleaned_data["language"], now=timezone.now()
        )
        messages.success(request, _("Saved."))
        response = redirect("security:overview")
        response.set_cookie(settings.LANGUAGE_COOKIE_NAME, form.cleaned_data["language"], samesite="Lax")
        return response
    return redirect("security:overview")


@login_required
def activity_download(request):
    """ "Download my activity": the person's own orders, key reveals, disputes, withdrawals, sign-ins and
    security changes, as CSV."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="activity-{timezone.now():%Y%m%d}.csv"'
    response["Cache-Control"] = "no-store"
    response.write("\ufeff")  # a BOM, so spreadsheet programs read the Chinese text as UTF-8
    selectors.activity_csv_write(rows=selectors.activity_rows(user=request.user), out=response)
    return response


@login_required
def verify(request):
    """The sign-in's second step, and where the merchant and staff pages send an unverified session:
    a code from the app or a backup code marks the session verified, then on to a safe `next`."""
    next_url = next_url_safe(
        request,
        request.POST.get("next") or request.GET.get("next"),
        default=resolve_url(settings.LOGIN_REDIRECT_URL),
    )
    if request.user.is_verified() or not django_otp.user_has_device(request.user, confirmed=True):
        return redirect(next_url)
    form = OtpCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            device = services.otp_sign_in_verify(user=request.user, code=form.cleaned_data["code"], now=timezone.now())
        except services.TwoFactorThrottled:
            form.add_error("code", _("Too many wrong codes in a row. Wait a moment, then try again."))
        except services.TwoFactorInvalid:
            form.add_error("code", _("That code is wrong or was already used."))
        else:
            request.session.cycle_key()  # a new session id for the stronger sign-in
            django_otp.login(request, device)
            return redirect(next_url)
    return render(request, "accounts/verify.html", {"form": form, "next": next_url})


@login_required
def totp_enrol(request):
    """Show the QR code of a new (unconfirmed) device; the first correct code confirms it.

    Someone who has a device already must verify this session first: a password alone must not be
    enough to put a new phone in place of the old one.
    """
    user = request.user
    if not user.is_verified() and django_otp.user_has_device(user, confirmed=True):
        return redirect(f"{reverse('security:verify')}?{urlencode({'next': request.get_full_path()})}")
    next_url = next_url_safe(request, request.GET.get("next"), default="")
    now = timezone.now()
    device = services.totp_enrol_start(user=user, now=now)
    replacing = services.totp_device_confirmed(user) is not None
    if request.method == "POST":
        try:
            codes = services.totp_enrol_confirm(
                user=user, code=request.POST.get("code", ""), current_code=request.POST.get("current_code", ""), now=now
            )
        except services.CurrentCodeInvalid:
            messages.error(request, _("The code from your current app is wrong or was already used."))
        except services.TwoFactorInvalid:
            messages.error(request, _("That code did not match. Check your phone's clock and try the next code."))
        else:
            # The first code proved the new device: this session counts as verified by it.
            request.session.cycle_key()
            django_otp.login(request, services.totp_device_confirmed(user))
            messages.success(request, _("Two-factor authentication is on."))
            return render(request, "accounts/backup_codes.html", {"codes": codes, "next": next_url})
    # segno renders the QR code as inline SVG: no image service ever sees the secret.
    qr_svg = segno.make(device.config_url, error="m").svg_inline(scale=4)
    return render(
        request,
        "accounts/totp_enrol.html",
        {"qr_svg": mark_safe(qr_svg), "secret": b32encode(device.bin_key).decode(), "replacing": replacing},  # noqa: S308 (segno's own SVG)
    )


@login_required
@require_POST
def backup_codes_regenerate(request):
    try:
        codes = services.backup_codes_regenerate(
            user=request.user, code=request.POST.get("code", ""), now=timezone.now()
        )
    except services.TwoFactorRequired:
        messages.error(request, _("Set up an authenticator app first."))
    except services.TwoFactorInvalid:
        messages.error(request, _("That code is wrong or was already used."))
    else:
        return render(request, "accounts/backup_codes.html", {"codes": codes})
    return redirect("security:overview")
