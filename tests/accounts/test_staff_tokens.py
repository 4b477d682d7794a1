"""Staff API tokens: minted only after a fresh second factor, stored hashed, shown once, revocable."""

import pytest
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import AuditEntry, StaffApiToken
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_fresh_code_mints_a_token_kept_only_as_a_hash():
    user = factories.user_create(is_staff=True)
    device = factories.totp_device_create(user=user)
    record, secret = services.staff_api_token_create(
        user=user, name="arbitration", code=factories.totp_code(device), now=timezone.now()
    )
    assert secret.startswith(services.STAFF_TOKEN_PREFIX)
    stored = StaffApiToken.objects.get(pk=record.pk)
    assert secret not in {stored.digest, stored.prefix} and stored.digest == services.staff_api_token_digest(secret)
    assert services.staff_api_token_active(token=secret) == stored
    assert AuditEntry.objects.filter(action="api_token.created", subject_id=str(record.pk), actor=user).exists()


@pytest.mark.parametrize("case", ["wrong_code", "reused_code", "no_device", "not_staff"])
def test_a_token_is_refused_without_a_fresh_second_factor_and_nothing_is_created(case):
    user = factories.user_create(is_staff=case != "not_staff")
    code = "000000"
    if case != "no_device":
        device = factories.totp_device_create(user=user)
        code = factories.totp_code(device)
        if case == "reused_code":
            services.staff_api_token_create(user=user, name="first", code=code, now=timezone.now())
        elif case == "wrong_code":
            code = "12345" if code != "12345" else "54321"
    before = StaffApiToken.objects.count()
    with pytest.raises(services.StaffTokenRefused) as refused:
        services.staff_api_token_create(user=user, name="t", code=code, now=timezone.now())
    expected = {
        "wrong_code": "bad_code",
        "reused_code": "bad_code",
        "no_device": "two_factor_required",
        "not_staff": "not_staff",
    }
    assert refused.value.code == expected[case]
    assert StaffApiToken.objects.count() == before


def test_a_revoked_token_or_a_demoted_user_is_refused():
    user = factories.user_create(is_staff=True)
    record, secret = services.staff_api_token_create_unchecked(user=user, name="t", now=timezone.now())
    client = Client(HTTP_AUTHORIZATION=f"Token {secret}")
    url = "/api/v1/staff/disputes/999999/decide/"
    assert client.post(url, {}, content_type="application/json").status_code == 404  # authenticated
    user.is_staff = False
    user.save(update_fields=["is_staff"])
    assert client.post(url, {}, content_type="application/json").status_code == 401
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    assert services.staff_api_token_revoke(token=record, actor=user, now=timezone.now()) is True
    response = client.post(url, {}, content_type="application/json")
    assert (response.status_code, response.json()["code"]) == (401, "authentication_failed")
    assert services.staff_api_token_revoke(token=record, actor=user, now=timezone.now()) is False
