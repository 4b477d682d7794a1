"""A Content-Security-Policy without inline script on every page; templates that keep to it."""

import re
from pathlib import Path

import pytest
from django.test import Client

from tests import factories

pytestmark = pytest.mark.django_db
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def test_pages_and_api_answers_carry_a_policy_without_inline_script():
    product = factories.product_create(stock=1)
    client = Client()
    for url in ["/", f"/products/{product.pk}/", "/accounts/login/", "/transparency/", "/api/v1/products/"]:
        response = client.get(url)
        assert response.status_code == 200, url
        directives = policy(response)
        assert directives["script-src"] == ["'self'"], url
        assert "'unsafe-inline'" not in directives["style-src"], url
        assert directives["frame-ancestors"] == ["'none'"], url


def test_only_the_api_docs_page_allows_its_inline_style_and_it_has_no_inline_script():
    docs = Client().get("/api/docs/")
    assert docs.status_code == 200
    assert policy(docs)["script-src"] == ["'self'"]
    assert "'unsafe-inline'" in policy(docs)["style-src"]
    assert re.search(rb"<script>\s*\S", docs.content) is None  # its start-up script is a file


def test_no_template_has_inline_script_handlers_or_style_attributes():
    offences = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        # An HTML e-mail is never served under the CSP, and mail clients read only inline styles there:
        # it may style inline, but never script.
        page = "email" not in path.parts
        patterns = (r"<script(?![^>]*\bsrc=)[^>]*>", r"\son[a-z]+\s*=", "javascript:")
        for pattern in patterns + ((r"\sstyle\s*=", r"<style") if page else ()):
            if re.search(pattern, text, flags=re.IGNORECASE):
                offences.append(f"{path.relative_to(TEMPLATES)}: {pattern}")
    assert offences == []


def test_the_fixed_policy_is_django_csps_and_follows_the_settings(settings):
    from csp.utils import build_policy

    client = Client()
    assert client.get("/").headers["Content-Security-Policy"] == build_policy()
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    assert client.get("/").headers["Content-Security-Policy"] == "default-src 'none'"
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": {"default-src": ["'self'"]}}
    response = client.get("/")
    assert response.headers["Content-Security-Policy-Report-Only"] == "default-src 'self'"
