"""Two-factor services own their transactions: inside a caller's, they fail loudly.

A failed code's throttle count and its audit line must stay committed even when the caller's work is
rolled back (else a guesser could retry for ever inside transactions that never commit), so every
code check, enrolment and backup-code issue is durable. Re-sealing seeds stays an inner step of
`rotate_master_key`'s one transaction.
"""

import pytest
from django.db import transaction
from django.utils import timezone

from accounts import services
from accounts.models import AuditEntry, AuthenticatorDevice
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "name", ["totp_enrol_start", "totp_device_provision_unchecked", "backup_codes_issue_unchecked"]
)
def test_a_top_level_service_refuses_to_run_inside_another_transaction(name):
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        getattr(services, name)()


def _enrolled_user():
    user = factories.user_create()
    device = services.totp_enrol_start(user=user, now=timezone.now())
    services.totp_enrol_confirm(user=user, code=factories.totp_code(device), now=timezone.now())
    device.refresh_from_db()
    device.throttle_reset()
    return user, device


@pytest.mark.parametrize(
    "check",
    [
        lambda user: services.otp_fresh_code_check(user=user, code="000000"),
        lambda user: services.otp_sign_in_verify(user=user, code="000000", now=timezone.now()),
        lambda user: services.backup_codes_regenerate(user=user, code="000000", now=timezone.now()),
    ],
    ids=["fresh_code", "sign_in", "backup_codes_regenerate"],
)
def test_a_code_check_refuses_to_run_inside_a_callers_transaction(check):
    user, device = _enrolled_user()
    audited = AuditEntry.objects.count()
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        check(user)
    device.refresh_from_db()
    assert device.throttling_failure_count == 0
    assert AuditEntry.objects.count() == audited


def test_confirming_an_app_refuses_to_run_inside_a_callers_transaction():
    user = factories.user_create()
    device = services.totp_enrol_start(user=user, now=timezone.now())
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        services.totp_enrol_confirm(user=user, code=factories.totp_code(device), now=timezone.now())
    assert not AuthenticatorDevice.objects.filter(user=user, confirmed=True).exists()
