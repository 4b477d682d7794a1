"""What Django's error reports (the DEBUG page, mails to admins) may show."""

import re

from django.views.debug import SafeExceptionReporterFilter


class ServiceUrlHidingFilter(SafeExceptionReporterFilter):
    """Django's filter, also hiding every setting and environment entry whose name contains URL.

    Services are configured by URLs that carry their passwords (DATABASE_URL, CELERY_BROKER_URL,
    CACHE_URL); hiding a harmless STATIC_URL as well is the price of never missing a new one.
    """

    hidden_settings = re.compile(SafeExceptionReporterFilter.hidden_settings.pattern + "|URL", flags=re.IGNORECASE)
