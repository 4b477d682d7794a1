"""The language switch remembers a signed-in user's choice and applies it wherever they sign in."""

import pytest
from django.test import Client

from tests import factories

pytestmark = pytest.mark.django_db


def test_the_choice_is_kept_on_the_user_and_applied_on_another_device():
    user = factories.user_create()
    phone = Client()
    phone.force_login(user)
    response = phone.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.language == "zh-hans"

    laptop = Client(HTTP_ACCEPT_LANGUAGE="en")  # a fresh browser that asks for English
    laptop.force_login(user)
    page = laptop.get("/")
    assert page["Content-Language"] == "zh-hans" and '<html lang="zh-hans">' in page.content.decode()
    assert page.cookies["django_language"].value == "zh-hans"


def test_a_visitor_switches_by_cookie_and_a_bad_code_changes_nothing():
    visitor = Client()
    visitor.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert visitor.get("/")["Content-Language"] == "zh-hans"
    user = factories.user_create()
    client = Client()
    client.force_login(user)
    client.post("/i18n/setlang/", {"language": "xx", "next": "/"})
    user.refresh_from_db()
    assert user.language == ""


def test_every_page_has_the_footer_and_the_favicon(client):
    html = client.get("/").content.decode()
    for path in ("/rules/", "/faq/", "/terms/", "/privacy/", "/contact/", "/transparency/"):
        assert f'href="{path}"' in html
        assert client.get(path).status_code == 200
    assert 'rel="icon" href="/static/favicon.svg"' in html
