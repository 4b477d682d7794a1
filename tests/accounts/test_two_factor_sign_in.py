"""Two-factor sign-in (password, then a code) and the gate in front of the merchant area and staff pages."""

import pytest
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import AuditEntry, AuthenticatorDevice
from tests import factories

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-1"
VERIFY = "/account/security/verify/"


def enrolled(user):
    """A confirmed TOTP device and backup codes, through the real enrolment services."""
    device = services.totp_enrol_start(user=user, now=timezone.now())
    backup = services.totp_enrol_confirm(user=user, code=factories.totp_code(device), now=timezone.now())
    device.refresh_from_db()
    return device, backup


def sign_in(client, user, next_url="/merchant/"):
    return client.post("/accounts/login/", {"username": user.username, "password": PASSWORD, "next": next_url})


def is_verified(client) -> bool:
    from django_otp import DEVICE_ID_SESSION_KEY

    return DEVICE_ID_SESSION_KEY in client.session


# --- signing in ------------------------------------------------------------------------------------------


def test_a_buyer_without_a_device_signs_in_with_the_password_alone(client):
    buyer = factories.user_create()
    response = sign_in(client, buyer, next_url="/orders/")
    assert response.status_code == 302
    assert response.url == "/orders/"
    assert client.session["_auth_user_id"] == str(buyer.pk)
    assert not AuditEntry.objects.filter(action__startswith="2fa.").exists()


def test_a_merchant_signs_in_with_password_then_code(client):
    merchant = factories.merchant_create()
    device, _backup = enrolled(merchant.user)

    response = sign_in(client, merchant.user)
    assert response.url == f"{VERIFY}?next=%2Fmerchant%2F"
    assert not is_verified(client)
    assert client.get("/merchant/").url == f"{VERIFY}?next=%2Fmerchant%2F"  # the password alone is not enough

    page = client.get(response.url)
    assert page.status_code == 200 and b'name="code"' in page.content
    done = client.post(response.url, {"code": factories.totp_code(device, offset_steps=1), "next": "/merchant/"})
    assert done.status_code == 302 and done.url == "/merchant/"
    assert is_verified(client)
    assert client.get("/merchant/").status_code == 200
    entry = AuditEntry.objects.get(action="2fa.verified")
    assert (entry.actor, entry.data["purpose"]) == (merchant.user, "sign_in")


def test_a_wrong_code_is_a_form_error_and_repeated_failures_are_throttled(client, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 60  # the back-off outlasts the test, however slow the machine
    merchant = factories.merchant_create()
    device, _backup = enrolled(merchant.user)
    sign_in(client, merchant.user)
    right = factories.totp_code(device, offset_steps=1)
    wrong = "000000" if right != "000000" else "111111"

    response = client.post(VERIFY, {"code": wrong, "next": "/merchant/"})
    assert response.status_code == 200
    assert "That code is wrong or was already used." in response.content.decode()
    assert not is_verified(client)
    failure = AuditEntry.objects.get(action="2fa.failed")
    assert failure.data == {"purpose": "sign_in", "reason": "wrong_or_reused"}

    throttled = client.post(VERIFY, {"code": right, "next": "/merchant/"})  # even the right code, for now
    assert throttled.status_code == 200
    assert "Too many wrong codes in a row" in throttled.content.decode()
    assert not is_verified(client)
    assert AuditEntry.objects.filter(action="2fa.failed", data__reason="throttled").count() == 1
    device.refresh_from_db()
    assert device.throttling_failure_count == 1  # a throttled try does not count again

    AuthenticatorDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=timezone.now() - timezone.timedelta(minutes=2)
    )
    assert client.post(VERIFY, {"code": right, "next": "/merchant/"}).url == "/merchant/"
    assert is_verified(client)


def test_a_code_works_once(client):
    merchant = factories.merchant_create()
    device, _backup = enrolled(merchant.user)
    code = factories.totp_code(device, offset_steps=1)
    sign_in(client, merchant.user)
    assert client.post(VERIFY, {"code": code}).status_code == 302

    other = Client()  # someone who saw the code and the password
    sign_in(other, merchant.user)
    reused = other.post(VERIFY, {"code": code})
    assert reused.status_code == 200
    assert "That code is wrong or was already used." in reused.content.decode()
    assert not is_verified(other)


def test_a_backup_code_signs_in_once(client):
    merchant = factories.merchant_create()
    _device, backup = enrolled(merchant.user)
    sign_in(client, merchant.user)
    assert client.post(VERIFY, {"code": f" {backup[0].upper()} ", "next": "/merchant/"}).url == "/merchant/"
    assert is_verified(client)
    assert services.backup_codes_left(merchant.user) == len(backup) - 1
    assert client.get("/merchant/").status_code == 200

    other = Client()
    sign_in(other, merchant.user)
    assert other.post(VERIFY, {"code": backup[0]}).status_code == 200
    assert not is_verified(other)


def test_next_must_stay_on_this_site(client):
    merchant = factories.merchant_create()
    device, _backup = enrolled(merchant.user)
    sign_in(client, merchant.user)
    response = client.post(
        f"{VERIFY}?next=https://evil.example/", {"code": factories.totp_code(device, offset_steps=1)}
    )
    assert response.url == "/"


def test_regenerated_backup_codes_keep_the_session_verified(client):
    merchant = factories.merchant_create()
    device, backup = enrolled(merchant.user)
    sign_in(client, merchant.user)
    client.post(VERIFY, {"code": backup[0]})
    response = client.post("/account/security/backup-codes/", {"code": factories.totp_code(device, offset_steps=1)})
    assert response.status_code == 200
    assert is_verified(client)
    assert client.get("/merchant/").status_code == 200


# --- the gate ---------------------------------------------------------------------------------------------


def test_merchant_without_a_device_is_sent_to_enrol_and_comes_back_verified(client):
    merchant = factories.merchant_create()
    client.force_login(merchant.user)

    response = client.get("/merchant/products/new/")
    assert response.url == "/account/security/totp/?next=%2Fmerchant%2Fproducts%2Fnew%2F"
    page = client.get(response.url)
    assert "Merchants and staff must use two-factor authentication." in page.content.decode()
    device = AuthenticatorDevice.objects.get(user=merchant.user, confirmed=False)
    done = client.post(response.url, {"code": factories.totp_code(device)})
    assert 'href="/merchant/products/new/"' in done.content.decode()  # "continue" after the backup codes
    assert is_verified(client)  # the first code proved the new device
    assert client.get("/merchant/products/new/").status_code == 200


def test_pages_that_stay_open_without_a_second_factor(client):
    merchant = factories.merchant_create()
    enrolled(merchant.user)
    client.force_login(merchant.user)
    assert client.get("/merchant/status/").status_code == 200
    assert client.get("/account/security/").status_code == 200
    assert client.get("/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert "_auth_user_id" not in client.session


def test_a_new_phone_needs_a_verified_session(client):
    """Otherwise a stolen password would be enough to swap the victim's authenticator for one's own."""
    merchant = factories.merchant_create()
    device, _backup = enrolled(merchant.user)
    client.force_login(merchant.user)
    assert client.get("/account/security/totp/").url == f"{VERIFY}?next=%2Faccount%2Fsecurity%2Ftotp%2F"
    assert client.post("/account/security/totp/", {"code": "123456"}).url.startswith(VERIFY)
    assert list(AuthenticatorDevice.objects.filter(user=merchant.user)) == [device]

    factories.login_verified(client, merchant.user)
    assert client.get("/account/security/totp/").status_code == 200


def test_merchant_api_by_session_needs_the_second_factor_but_a_token_does_not(client):
    from shop import services as shop_services

    merchant = factories.merchant_create()
    enrolled(merchant.user)
    client.force_login(merchant.user)
    assert client.get("/api/v1/merchant/products/").status_code == 403
    factories.login_verified(client, merchant.user)
    assert client.get("/api/v1/merchant/products/").status_code == 200

    _record, secret = shop_services.merchant_api_token_create_unchecked(
        merchant=merchant, name="t", actor=None, now=timezone.now()
    )
    assert Client(HTTP_AUTHORIZATION=f"Token {secret}").get("/api/v1/merchant/products/").status_code == 200


@pytest.mark.parametrize("path", ["/admin/", "/admin/shop/merchant/", "/admin/login/?next=/admin/shop/merchant/"])
def test_admin_needs_a_verified_staff_session(client, path):
    staff = factories.user_create(is_staff=True, is_superuser=True)
    client.force_login(staff)
    target = "%2Fadmin%2Fshop%2Fmerchant%2F" if "merchant" in path else "%2Fadmin%2F"

    response = client.get(path)  # no device: enrol first
    assert response.url == f"/account/security/totp/?next={target}"

    device, _backup = enrolled(staff)
    response = client.get(path)  # a device, but this session has not used it
    assert response.url == f"{VERIFY}?next={target}"

    assert client.post(response.url, {"code": factories.totp_code(device, offset_steps=1)}).status_code == 302
    assert client.get(path.split("?")[0] if "login" not in path else "/admin/shop/merchant/").status_code == 200


def test_admin_still_sends_strangers_to_its_login(client):
    assert client.get("/admin/").url == "/admin/login/?next=/admin/"
    client.force_login(factories.user_create())  # signed in, not staff
    assert client.get("/admin/").url == "/admin/login/?next=/admin/"


def test_staff_refund_page_needs_a_verified_session(client, run_on_commit):
    product = factories.product_create(stock=2)
    with run_on_commit():
        order = factories.order_delivered(product=product)
    staff = factories.user_create(is_staff=True)
    enrolled(staff)
    client.force_login(staff)
    response = client.post(f"/staff/orders/{order.pk}/refund/", {"disposition": "restock"})
    assert response.url == f"{VERIFY}?next=%2Fstaff%2Forders%2F{order.pk}%2Frefund%2F"
    order.refresh_from_db()
    assert order.status == "delivered"


def test_the_back_off_after_many_wrong_codes_is_capped(client, settings):
    """Eight slow wrong codes used to lock the right one out for 128 s and doubling; now at most a minute."""
    import time_machine

    settings.OTP_TOTP_THROTTLE_FACTOR = 1
    settings.OTP_THROTTLE_MAX_DELAY_SECONDS = 60
    merchant = factories.merchant_create()
    device, _backup = enrolled(merchant.user)
    sign_in(client, merchant.user)
    start = timezone.now() + timezone.timedelta(minutes=5)
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(8):
            clock.shift(timezone.timedelta(hours=1))  # slow enough that each try counts as a failure
            valid = {factories.totp_code(device, offset_steps=s) for s in (-1, 0, 1)}
            wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)
            response = client.post(VERIFY, {"code": wrong, "next": "/merchant/"})
            assert "That code is wrong or was already used." in response.content.decode()
        assert AuditEntry.objects.filter(action="2fa.failed", data__reason="wrong_or_reused").count() == 8
        clock.shift(timezone.timedelta(seconds=61))
        right = factories.totp_code(device)
        assert client.post(VERIFY, {"code": right, "next": "/merchant/"}).url == "/merchant/"
    assert is_verified(client)
