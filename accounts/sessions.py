"""Tracked sessions: every signed-in browser session has a `UserSession` row its owner can see and end.

The row's `public_id` lives in the session's own data, so it survives the key change at the second
factor (`cycle_key`) and works with any session engine. A session whose row was ended ("sign out",
"sign out everywhere", a password change, "this wasn't me") or is missing is signed out on its next
request, whichever process serves it.
"""

from django.contrib.auth import SESSION_KEY as AUTH_SESSION_KEY
from django.contrib.auth import logout
from django.utils import timezone

from accounts import account_services
from accounts.models import UserSession
from core.client_ip import client_ip
from core.device import device_id

SESSION_KEY = "_shop_session"
TOUCH_SECONDS = 60


def current_session_id(request) -> str | None:
    return request.session.get(SESSION_KEY) if hasattr(request, "session") else None


class SessionTrackingMiddleware:
    """After AuthenticationMiddleware: ends sessions whose row is gone; gives new ones their row."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        signed_in_as = None
        if user is not None and user.is_authenticated:
            public_id = request.session.get(SESSION_KEY)
            row = (
                UserSession.objects.filter(public_id=public_id, user=user).only("ended_at", "last_seen_at").first()
                if public_id
                else None
            )
            if public_id and (row is None or row.ended_at is not None):
                logout(request)  # flushes the session; the request goes on as a visitor's
            elif row is not None:
                signed_in_as = public_id
                if (timezone.now() - row.last_seen_at).total_seconds() > TOUCH_SECONDS:
                    UserSession.objects.filter(pk=row.pk).update(last_seen_at=timezone.now())
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if signed_in_as and (user is None or not user.is_authenticated):
            # Signed out by this request (the sign-out button): the row is no longer an open session.
            UserSession.objects.filter(public_id=signed_in_as, ended_at__isnull=True).update(ended_at=timezone.now())
        if (
            user is not None
            and user.is_authenticated
            and hasattr(request, "session")
            and AUTH_SESSION_KEY in request.session  # a session sign-in, not an API token's request
            and not request.session.get(SESSION_KEY)
        ):
            # Signed in by this request (or before sessions were tracked): give the session its row.
            row = account_services.session_start(
                user=user,
                now=timezone.now(),
                ip=client_ip(request),
                user_agent=request.headers.get("User-Agent", ""),
                device=device_id(request),
            )
            request.session[SESSION_KEY] = row.public_id
        return response
