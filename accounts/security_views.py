"""The signed-in user's security page: enrol a TOTP app (QR code), backup codes."""

from base64 import b32encode

import segno
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import services


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
def totp_enrol(request):
    """Show the QR code of a new (unconfirmed) device; the first correct code confirms it."""
    now = timezone.now()
    device = services.totp_enrol_start(user=request.user, now=now)
    if request.method == "POST":
        try:
            codes = services.totp_enrol_confirm(user=request.user, code=request.POST.get("code", ""), now=now)
        except services.TwoFactorInvalid:
            messages.error(request, _("That code did not match. Check your phone's clock and try the next code."))
        else:
            messages.success(request, _("Two-factor authentication is on."))
            return render(request, "accounts/backup_codes.html", {"codes": codes})
    # segno renders the QR code as inline SVG: no image service ever sees the secret.
    qr_svg = segno.make(device.config_url, error="m").svg_inline(scale=4)
    return render(
        request,
        "accounts/totp_enrol.html",
        {"qr_svg": mark_safe(qr_svg), "secret": b32encode(device.bin_key).decode()},  # noqa: S308 (segno's own SVG)
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
