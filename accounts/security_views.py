"""The signed-in user's security pages: the sign-in's second step, enrol a TOTP app (QR code),
backup codes."""

from base64 import b32encode
from urllib.parse import urlencode

import django_otp
import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import services
from accounts.forms import OtpCodeForm
from accounts.two_factor import next_url_safe


@login_required
def overview(request):
    return render(
        request,
        "accounts/security.html",
        {
            "device": services.totp_device_confirmed(request.user),
            "backup_codes_left": services.backup_codes_left(request.user),
        },
    )


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
