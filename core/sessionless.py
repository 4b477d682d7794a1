"""The short middleware chain: a request without a session cookie, to a view that needs no session.

A guest's checkout (`POST /api/v1/orders/`), the poll for its keys and a payment provider's webhook
carry no session cookie, and nothing the session machinery does concerns them: there is no signed-in
user to load, no message to store, no second factor, no tracked session, no login lockout, and no
CSRF check (DRF's views and the webhooks are csrf-exempt). Yet the full MIDDLEWARE runs all of it on
each of them (issue 9); the short chain spends 105-135 µs of CPU less per checkout, keys poll and
webhook (bench/sessionless_cpu.py). Such a view is marked `@session_not_required`;
`SessionlessChainMiddleware`, placed in MIDDLEWARE just before the session middleware, resolves the
path of a request that carries no session cookie and, when the view is marked, hands the request to
a second chain built from SESSIONLESS_MIDDLEWARE instead of passing it down the rest of MIDDLEWARE.
Everything else (a signed-in buyer's browser, every page, any request with a session cookie) goes
down the full chain exactly as before.

Why this shape:
- A marker on the view, like Django's `csrf_exempt` and `login_not_required`: whoever writes the view
  knows whether it reads the session, and there is no list of paths to keep in step with the URLs.
  A class-based view takes it with `@method_decorator(session_not_required, name="dispatch")`.
- A middleware, not a custom WSGI handler: Django's test client, runserver and the live server go
  through MIDDLEWARE too, so every existing test of these endpoints runs the short chain.
- The second chain is a `BaseHandler`: Django's own request handling (view middleware,
  ATOMIC_REQUESTS, exceptions turned into the usual 404/500 responses and logged, template
  responses). Only its middleware list is put together here, because `BaseHandler.load_middleware`
  reads settings.MIDDLEWARE and takes no other list (swapping the setting while it runs would race
  with another thread building its own handler, as the test client's do).
- The path is resolved once: the short chain reuses the match. A sessionless request to an unmarked
  view is resolved again by Django on the full chain (a few tens of µs; pages cost milliseconds).

The responses keep their headers. SecurityMiddleware, WhiteNoise and the ops endpoints run above this
middleware for every request; the short chain keeps every middleware below that adds a header or
checks something a sessionless request still needs: Locale (translated error messages, Content-Language,
Vary), Common (the Host check, Content-Length), the device cookie the risk engine reads, X-Frame-Options
and CSP. `Vary: Cookie`, which the session middleware adds on the full chain (the user is always looked
up there), is added here too, and it is true: a session cookie changes which chain answers.
tests/core/test_sessionless.py compares the headers.

A view may be marked when, for a request without a session cookie, it does not read `request.session`,
add messages, call `get_token`, or call `request.user.is_verified()`: here `request.user` is a plain
`AnonymousUser` (DRF's token authentication still puts its own user there).
"""

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import Resolver404, get_resolver
from django.utils.cache import patch_vary_headers
from django.utils.module_loading import import_string


def session_not_required(view):
    """Marks a view that needs no session: a request to it without a session cookie takes the short chain."""
    view.session_not_required = True
    return view


class SessionlessChainMiddleware:
    """Sends a request without a session cookie to a `@session_not_required` view down the short chain."""

    def __init__(self, get_response):
        self.get_response = get_response  # the rest of MIDDLEWARE, then the view
        self.short_chain = ShortChainHandler()  # SESSIONLESS_MIDDLEWARE, then the view

    def __call__(self, request):
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            try:
                match = get_resolver().resolve(request.path_info)
            except Resolver404:
                match = None  # the full chain answers it (CommonMiddleware's slash redirect, the 404 page)
            if match is not None and getattr(match.func, "session_not_required", False):
                request.resolver_match = match
                response = self.short_chain(request)
                patch_vary_headers(response, ("Cookie",))
                return response
        return self.get_response(request)


class ShortChainHandler(BaseHandler):
    """Django's request handling behind SESSIONLESS_MIDDLEWARE; resolving is already done."""

    def __init__(self):
        self.load_middleware()

    def __call__(self, request):
        return self._middleware_chain(request)

    def load_middleware(self, is_async=False):
        # BaseHandler.load_middleware's loop over another list, synchronous only (the shop runs WSGI).
        self._view_middleware, self._template_response_middleware, self._exception_middleware = [], [], []
        handler = convert_exception_to_response(self._get_response)
        for middleware_path in reversed(settings.SESSIONLESS_MIDDLEWARE):
            middleware = import_string(middleware_path)(handler)
            if hasattr(middleware, "process_view"):
                self._view_middleware.insert(0, middleware.process_view)
            if hasattr(middleware, "process_template_response"):
                self._template_response_middleware.append(middleware.process_template_response)
            if hasattr(middleware, "process_exception"):
                self._exception_middleware.append(middleware.process_exception)
            handler = convert_exception_to_response(middleware)
        self._middleware_chain = handler

    def resolve_request(self, request):
        return request.resolver_match  # SessionlessChainMiddleware's, against the same ROOT_URLCONF


async def _anonymous_user():
    return AnonymousUser()


class AnonymousUserMiddleware:
    """The short chain's `request.user`: nobody is signed in without a session."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.user = AnonymousUser()
        request.auser = _anonymous_user
        return self.get_response(request)
