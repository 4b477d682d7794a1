"""The second-factor gate in front of the merchant area and the staff pages.

A signed-in merchant or staff member gets through only with a session that passed a second factor
(`request.user.is_verified()`, kept by django-otp's middleware). Without a device they are sent to
enrol one; with a device, to the verify page; both come back to where they were going (`next`).
"""

from functools import wraps
from urllib.parse import urlencode

import django_otp
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _


def next_url_safe(request: HttpRequest, url: str | None, *, default: str) -> str:
    """`url` if it stays on this site (no open redirect through `next`), else `default`."""
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return default


def two_factor_gate(request: HttpRequest, *, next_url: str | None = None) -> HttpResponse | None:
    """None if the session passed a second factor; otherwise the redirect to enrolment or to the
    verify page, carrying `next` (default: the page asked for)."""
    user = request.user
    if user.is_verified():
        return None
    query = urlencode({"next": next_url or request.get_full_path()})
    if not django_otp.user_has_device(user, confirmed=True):
        messages.warning(
            request,
            _("Merchants and staff must use two-factor authentication. Set up an authenticator app to continue."),
        )
        return redirect(f"{reverse('security:totp_enrol')}?{query}")
    return redirect(f"{reverse('security:verify')}?{query}")


def verified_required(view_func):
    """The view needs a signed-in user whose session passed a second factor (put it under the
    decorator that checks who may come at all, e.g. `staff_member_required`)."""

    @wraps(view_func)
    def wrapper(request, *args, **kwargs):
        response = two_factor_gate(request)
        if response is not None:
            return response
        return view_func(request, *args, **kwargs)

    return wrapper
