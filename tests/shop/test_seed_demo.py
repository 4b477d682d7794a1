import pytest
from django.core.management import call_command
from django.test import Client

from shop.models import MerchantApiToken

pytestmark = pytest.mark.django_db


def _token(output: str) -> str:
    line = next(line for line in output.splitlines() if "API token" in line)
    return line.rsplit(" ", 1)[1]


def test_seed_demo_prints_a_working_token_and_is_idempotent(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("seed_demo")
    first = _token(capsys.readouterr().out)
    call_command("seed_demo")
    second = _token(capsys.readouterr().out)

    assert first == second
    assert MerchantApiToken.objects.filter(revoked_at=None).count() == 1
    response = Client(HTTP_AUTHORIZATION=f"Token {first}").get("/api/v1/merchant/products/")
    assert response.status_code == 200
    assert response.json()["count"] == 3

    (tmp_path / "demo-merchant-token.txt").unlink()  # the secret is lost: a new token replaces the old
    call_command("seed_demo")
    third = _token(capsys.readouterr().out)
    assert third != first
    assert MerchantApiToken.objects.filter(revoked_at=None).count() == 1
    assert Client(HTTP_AUTHORIZATION=f"Token {first}").get("/api/v1/merchant/products/").status_code == 401
