"""A signed-in user reads the shop in the language they chose (User.language), on any device."""

from django.conf import settings
from django.utils import translation


class UserLanguageMiddleware:
    """Runs after LocaleMiddleware and authentication: for a signed-in user with a saved language, that
    language is activated for the request and the language cookie follows it (so it stays after they
    sign out). Visitors keep LocaleMiddleware's choice (cookie, then the browser's Accept-Language)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        language = None
        # Only a request that carries a session can belong to a signed-in user: no query for others.
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            user = request.user
            language = getattr(user, "language", "") if user.is_authenticated else ""
            if language and language != translation.get_language():
                translation.activate(language)
                request.LANGUAGE_CODE = translation.get_language()
        response = self.get_response(request)
        if language:  # the view may have changed it (the language switch): keep the cookie on the latest
            language = getattr(request.user, "language", "") or language
        if language and request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME) != language:
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME,
                language,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                path=settings.LANGUAGE_COOKIE_PATH,
                domain=settings.LANGUAGE_COOKIE_DOMAIN,
                secure=settings.LANGUAGE_COOKIE_SECURE,
                httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
                samesite=settings.LANGUAGE_COOKIE_SAMESITE,
            )
        return response
