"""Issue 7: the sandbox gateway (keys for money that never arrived) cannot run in production."""

import base64
import importlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core import checks
from django.test import Client, override_settings
from django.urls import Resolver404, clear_url_caches, resolve

from escrow import gateways
from escrow.models import Order, Payment, PaymentStatus, WebhookEvent
from shop.models import CardKey, CardKeyStatus
from tests import factories

BASE_DIR = Path(settings.BASE_DIR)


# --- a real process started with production settings -------------------------------------------------


def _production_env(tmp_path, **extra: str) -> dict[str, str]:
    # A clean environment, as a production process gets: nothing leaks in from the test run.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update(
        SHOP_ENV="production",
        SHOP_VAR_DIR=str(tmp_path),
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="shop.example.com",
        CARDKEY_MASTER_KEYS="v1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        CARDKEY_INDEX_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        EVIDENCE_SIGNING_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        **extra,
    )
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("asked", ["sandbox", "sandbox,other", " sandbox "])
def test_production_with_the_sandbox_asked_for_refuses_to_start(tmp_path, asked):
    result = _manage(_production_env(tmp_path, PAYMENT_GATEWAYS=asked, SANDBOX_WEBHOOK_SECRET="s"), "check")
    assert result.returncode != 0
    assert "PAYMENT_GATEWAYS" in result.stderr
    assert "SHOP_ENV=production" in result.stderr
    assert "sandbox" in result.stderr


def test_production_starts_without_the_sandbox_or_its_secret_and_mounts_none_of_it(tmp_path):
    env = _production_env(tmp_path)
    deploy = _manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert deploy.returncode == 0, deploy.stderr
    probe = (
        "from django.urls import Resolver404, resolve\n"
        "from escrow.gateways import gateways_enabled\n"
        "for path in ['/payments/sandbox/webhook/', '/payments/sandbox/pay/sbx_1/']:\n"
        "    try:\n"
        "        resolve(path)\n"
        "        print('mounted', path)\n"
        "    except Resolver404:\n"
        "        print('absent', path)\n"
        "print('enabled', gateways_enabled())\n"
    )
    shell = _manage(env, "shell", "-c", probe)
    assert shell.returncode == 0, shell.stderr
    assert [line for line in shell.stdout.splitlines() if line.startswith(("absent", "mounted", "enabled"))] == [
        "absent /payments/sandbox/webhook/",
        "absent /payments/sandbox/pay/sbx_1/",
        "enabled []",
    ]


# --- production settings forced on a running process (defence in depth) ---------------------------------


def _urls_reload() -> None:
    import config.urls

    importlib.reload(config.urls)
    clear_url_caches()


@pytest.fixture
def production_urls():
    """Settings as production has them, and the URLconf built from them (as a production process does)."""
    with override_settings(PRODUCTION=True, PAYMENT_GATEWAYS=[]):
        _urls_reload()
        yield
    _urls_reload()


@pytest.fixture
def placed(db):
    return factories.order_place(product=factories.product_create(stock=1, price=1500))


@pytest.mark.django_db
def test_production_urls_do_not_mount_the_sandbox(placed, production_urls):
    payment_id = placed.payment.payment_id
    for path in ["/payments/sandbox/webhook/", f"/payments/sandbox/pay/{payment_id}/"]:
        with pytest.raises(Resolver404):
            resolve(path)
    client = Client()
    assert client.get(f"/payments/sandbox/pay/{payment_id}/").status_code == 404
    assert client.post(f"/payments/sandbox/pay/{payment_id}/", {"outcome": "pay"}).status_code == 404
    body, headers = factories.signed_webhook(payment=placed.payment)
    assert factories.webhook_post(client, body, headers).status_code == 404
    assert Payment.objects.get(pk=placed.payment.pk).status == PaymentStatus.PENDING
    assert WebhookEvent.objects.count() == 0
    assert not [m for m in checks.run_checks(tags=[checks.Tags.security]) if m.id == "escrow.E001"]


@pytest.mark.django_db
def test_sandbox_still_mounted_under_production_settings_is_an_error_and_pays_nothing(placed, settings):
    """Settings switched after the URLconf was built: the check says so, and the pages still refuse."""
    settings.PRODUCTION = True
    settings.PAYMENT_GATEWAYS = ["sandbox"]
    errors = [message for message in checks.run_checks(tags=[checks.Tags.security]) if message.id == "escrow.E001"]
    assert len(errors) == 1
    assert errors[0].level == checks.ERROR
    assert "SHOP_ENV=production" in errors[0].msg
    assert "PAYMENT_GATEWAYS" in errors[0].msg
    assert "/payments/sandbox/" in errors[0].msg

    assert gateways.gateways_enabled() == []
    with pytest.raises(gateways.GatewayUnavailable):
        gateways.gateway_get("sandbox")
    payment_id = placed.payment.payment_id
    client = Client()
    assert client.get(f"/payments/sandbox/pay/{payment_id}/").status_code == 404
    assert client.post(f"/payments/sandbox/pay/{payment_id}/", {"outcome": "pay"}).status_code == 404
    body, headers = factories.signed_webhook(payment=placed.payment)
    assert factories.webhook_post(client, body, headers).status_code == 404
    assert Payment.objects.get(pk=placed.payment.pk).status == PaymentStatus.PENDING
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_check_is_quiet_outside_production():
    assert not [m for m in checks.run_checks(tags=[checks.Tags.security]) if m.id.startswith("escrow.")]


def test_an_unknown_gateway_name_is_a_check_error(settings):
    settings.PAYMENT_GATEWAYS = ["sandbox", "paypa1"]
    errors = [m for m in checks.run_checks(tags=[checks.Tags.security]) if m.id == "escrow.E002"]
    assert len(errors) == 1
    assert "paypa1" in errors[0].msg


# --- checkout with no gateway to pay through -----------------------------------------------------------


@pytest.mark.django_db
def test_api_checkout_without_a_gateway_is_refused_and_creates_nothing(settings):
    settings.PAYMENT_GATEWAYS = []
    product = factories.product_create(stock=2)
    response = Client().post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": 1, "email": "g@example.com"},
        content_type="application/json",
    )
    assert response.status_code == 503
    assert response.json()["code"] == "no_gateway"
    assert response.json()["detail"]
    assert Order.objects.count() == 0
    assert Payment.objects.count() == 0
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 2


@pytest.mark.django_db
def test_page_checkout_without_a_gateway_shows_a_form_error_and_creates_nothing(settings):
    settings.PAYMENT_GATEWAYS = []
    product = factories.product_create(stock=2)
    response = Client().post(f"/products/{product.pk}/checkout/", {"email": "g@example.com", "quantity": 1})
    assert response.status_code == 400
    assert "Payments are not available" in response.text
    assert Order.objects.count() == 0
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 2


@pytest.mark.django_db
def test_without_a_sandbox_secret_no_signature_is_accepted(placed, settings):
    """An HMAC under an empty key is one anybody can compute: no secret means no webhook."""
    settings.SANDBOX_WEBHOOK_SECRET = ""
    body, headers = factories.signed_webhook(payment=placed.payment)  # signed under the empty secret
    response = factories.webhook_post(Client(), body, headers)
    assert response.status_code == 400
    assert Payment.objects.get(pk=placed.payment.pk).status == PaymentStatus.PENDING
    assert WebhookEvent.objects.count() == 0


def test_production_refuses_to_start_without_the_evidence_signing_key(tmp_path):
    env = _production_env(tmp_path)
    del env["EVIDENCE_SIGNING_KEY"]
    result = _manage(env, "check")
    assert result.returncode != 0
    assert "EVIDENCE_SIGNING_KEY must be set in the environment" in result.stderr
