"""Login lockout: per username and address, per address across usernames (password spraying), and per
account from everywhere (a botnet guessing one password), with an unlock link by e-mail.

django-axes compares one failure count with one limit. `AXES_LOCKOUT_PARAMETERS` lists the
username+address pair first, the address alone second and the username alone third; this handler
counts all three and scales each to `AXES_FAILURE_LIMIT`, so the pair locks after `AXES_FAILURE_LIMIT`
failures, the address after `LOGIN_FAILURE_LIMIT_PER_IP` and the account after
`LOGIN_FAILURE_LIMIT_PER_ACCOUNT`. Someone else failing from a shared address therefore never locks a
different user out, until the address as a whole looks like a spray.

A lockout that names a real account (its pair or the account itself) e-mails the owner once per
cool-off an unlock link (`accounts.account_services.unlock_mail_send`): the owner can always get back in,
and the attacker, who does not read that mailbox, cannot.
"""

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.core.cache import cache
from django.db.models import Sum
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _


def username_of(request, credentials=None) -> str | None:
    """One name per account, whether it was typed as its username or its e-mail address, so two
    spellings never get two budgets (`AXES_USERNAME_CALLABLE`)."""
    from accounts.models import User

    typed = None
    if credentials:
        typed = credentials.get("username")
    if typed is None:
        data = getattr(request, "data", None) or getattr(request, "POST", {})
        typed = data.get("username") or data.get("email")
    if not typed:
        return typed
    typed = str(typed).strip()
    if "@" in typed:
        owner = User.objects.filter(email__iexact=typed).only("username").first()
        if owner is not None:
            return owner.username
    return typed


class UserThenAddressHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials=None) -> int:
        totals = [
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        ]
        per_pair, per_address = totals[0], totals[1]
        per_account = totals[2] if len(totals) > 2 else 0
        user_limit = settings.AXES_FAILURE_LIMIT
        # floor(a * U / A) reaches U exactly when a reaches A.
        return max(
            per_pair,
            per_address * user_limit // settings.LOGIN_FAILURE_LIMIT_PER_IP,
            per_account * user_limit // settings.LOGIN_FAILURE_LIMIT_PER_ACCOUNT,
        )

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        super().user_login_failed(sender, credentials, request=request, **kwargs)
        if request is not None and getattr(request, "axes_locked_out", False):
            _unlock_mail_once(request, credentials)


def _unlock_mail_once(request, credentials) -> None:
    from accounts import account_services
    from accounts.models import User

    username = username_of(request, credentials)
    user = User.objects.filter(username=username, is_active=True).exclude(email="").first() if username else None
    if user is None:
        return  # a sprayed name nobody owns, or an owner without a mailbox
    # Once per cool-off, in the shared cache: an attacker hammering the account must not flood the mailbox.
    if cache.add(f"accounts:unlock-mail:{user.pk}", 1, timeout=int(settings.AXES_COOLOFF_TIME * 3600)):
        account_services.account_locked_out(user=user, ip=getattr(request, "axes_ip_address", "") or "")


def lockout_response(request, original_response=None, credentials=None):
    """The answer while locked out (`AXES_LOCKOUT_CALLABLE`): 429, as JSON under /api/."""
    message = _(
        "Too many failed sign-in attempts. Try again later, or use the unlock link we e-mailed to the account's owner."
    )
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message, "code": "locked_out"}, status=429)
    return render(request, "accounts/locked_out.html", {"message": message}, status=429)
