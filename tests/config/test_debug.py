"""Issue 7: DEBUG is off unless asked for, and a debug page never shows the services' passwords."""

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.test import RequestFactory, override_settings
from django.views.debug import get_exception_reporter_filter, technical_500_response

BASE_DIR = Path(settings.BASE_DIR)
SECRETS = {
    "DATABASE_URL": "postgres://shop:db-pw-s3cret@db.internal:5432/shop",
    "CELERY_BROKER_URL": "redis://:broker-pw-s3cret@redis.internal:6379/0",
    "CACHE_URL": "redis://:cache-pw-s3cret@redis.internal:6379/2",
}
PASSWORDS = ["db-pw-s3cret", "broker-pw-s3cret", "cache-pw-s3cret"]


def _debug_setting(**env: str) -> str:
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.DEBUG)"],
        cwd=BASE_DIR,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_debug_is_off_unless_set():
    assert _debug_setting() == "False"
    assert _debug_setting(DEBUG="1") == "True"


def test_safe_settings_hide_the_service_urls():
    with override_settings(**SECRETS):
        safe = get_exception_reporter_filter(RequestFactory().get("/")).get_safe_settings()
    shown = repr(safe)
    for password in PASSWORDS:
        assert password not in shown
    assert safe["DATABASE_URL"] == safe["CELERY_BROKER_URL"] == safe["CACHE_URL"] != SECRETS["DATABASE_URL"]
    assert safe["TIME_ZONE"] == "UTC"  # other settings are still shown


def test_the_debug_500_page_shows_no_service_password():
    """The technical 500 page lists the settings and the request's environment (runserver passes os.environ)."""
    request = RequestFactory().get("/boom/", **SECRETS)
    with override_settings(DEBUG=True, **SECRETS):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            response = technical_500_response(request, *sys.exc_info())
    page = response.content.decode()
    assert "boom" in page and "DATABASE_URL" in page  # it is the debug page, listing the setting
    for password in PASSWORDS:
        assert password not in page
