"""TOTP enrolment through the security pages, backup codes, and the fresh-code check."""

import pytest
from django.utils import timezone

from accounts import services
from accounts.models import AuthenticatorDevice
from tests import factories

pytestmark = pytest.mark.django_db


def test_enrolment_page_shows_an_inline_qr_and_a_first_code_confirms(client):
    user = factories.user_create()
    client.force_login(user)
    page = client.get("/account/security/totp/")
    assert page.status_code == 200
    assert b"<svg" in page.content and b"http" not in page.content.split(b"<svg", 1)[1].split(b"</svg>")[0]
    device = AuthenticatorDevice.objects.get(user=user, confirmed=False)

    wrong = client.post(
        "/account/security/totp/", {"code": "000000" if factories.totp_code(device) != "000000" else "1"}
    )
    assert wrong.status_code == 200
    assert not AuthenticatorDevice.objects.filter(user=user, confirmed=True).exists()

    device.refresh_from_db()
    device.throttle_reset()
    done = client.post("/account/security/totp/", {"code": factories.totp_code(device)})
    assert done.status_code == 200
    assert AuthenticatorDevice.objects.filter(user=user, confirmed=True).count() == 1
    assert services.backup_codes_left(user) == 10
    assert b"<code>" in done.content


def test_fresh_code_check_needs_a_device_and_refuses_reuse():
    user = factories.user_create()
    with pytest.raises(services.TwoFactorRequired):
        services.otp_fresh_code_check(user=user, code="123456")
    device = services.totp_enrol_start(user=user, now=timezone.now())
    backup = services.totp_enrol_confirm(user=user, code=factories.totp_code(device), now=timezone.now())
    device.refresh_from_db()
    with pytest.raises(services.TwoFactorInvalid):  # the confirming code was used already
        services.otp_fresh_code_check(user=user, code=factories.totp_code(device))
    device.refresh_from_db()
    device.throttle_reset()
    services.otp_fresh_code_check(user=user, code=factories.totp_code(device, offset_steps=1))
    services.otp_fresh_code_check(user=user, code=backup[3])
    with pytest.raises(services.TwoFactorInvalid):
        services.otp_fresh_code_check(user=user, code=backup[3])
    assert services.backup_codes_left(user) == 9


def test_security_overview_points_to_enrolment(client):
    client.force_login(factories.user_create())
    page = client.get("/account/security/")
    assert b"/account/security/totp/" in page.content


def test_replacing_the_app_needs_a_fresh_code_from_the_current_one(client):
    user = factories.user_create()
    old = factories.login_verified(client, user)
    client.get("/account/security/totp/")
    new = AuthenticatorDevice.objects.get(user=user, confirmed=False)

    refused = client.post("/account/security/totp/", {"code": factories.totp_code(new)}, follow=True)
    assert "The code from your current app is wrong" in refused.text
    assert list(AuthenticatorDevice.objects.filter(user=user, confirmed=True)) == [old]

    new.refresh_from_db()
    new.throttle_reset()
    done = client.post(
        "/account/security/totp/",
        {"code": factories.totp_code(new, offset_steps=1), "current_code": factories.totp_code(old)},
    )
    assert done.status_code == 200
    assert list(AuthenticatorDevice.objects.filter(user=user, confirmed=True).values_list("pk", flat=True)) == [new.pk]
