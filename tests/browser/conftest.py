"""Playwright driving Debian's Chromium (/usr/bin/chromium) against pytest-django's live server.

Playwright's sync API runs an event loop in the test's thread, so the ORM calls the tests make there
need DJANGO_ALLOW_ASYNC_UNSAFE; the server itself runs in its own thread as usual.
"""

import os
import re
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the package is in requirements.txt
    sync_playwright = None


def _browser_missing() -> str | None:
    if sync_playwright is None:
        return "needs the playwright package"
    if not Path(CHROMIUM).exists():
        return f"needs Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def chromium():
    reason = _browser_missing()
    if reason:
        pytest.skip(reason=reason)
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server, settings):
    """A fresh phone-sized browser page; `page.goto("/path")` is relative to the live server."""
    settings.ALLOWED_HOSTS = ["*"]
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def sign_in():
    """`sign_in(page, user)`: the password, then (merchants and staff must use two-factor
    authentication) a code from the user's TOTP device on the verify page. Returns the device."""
    from accounts.services import totp_device_confirmed
    from tests import factories

    def sign_in(page, user):
        device = totp_device_confirmed(user) or factories.totp_device_create(user=user)
        page.goto("/accounts/login/")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", "pw-for-tests-1")
        page.click("button[type=submit].primary")
        page.wait_for_url(re.compile(r"/account/security/verify/"))
        page.fill("input[name=code]", factories.totp_code(device))
        page.click("button[type=submit].primary")
        page.wait_for_url(re.compile(r"/$"))
        return device

    return sign_in
