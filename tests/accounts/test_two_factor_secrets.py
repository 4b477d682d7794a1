"""Two-factor secrets at rest: TOTP seeds sealed and bound to their device, backup codes only hashed,
and master-key rotation re-sealing the seeds."""

import base64
import os

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts import sealing, services
from accounts.models import AuthenticatorDevice, BackupCode
from core import crypto
from tests import factories

pytestmark = pytest.mark.django_db


def _new_master() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_a_totp_seed_is_stored_sealed_and_does_not_open_on_another_device():
    now = timezone.now()
    device = services.totp_device_provision_unchecked(user=factories.user_create(), now=now)
    other = services.totp_device_provision_unchecked(user=factories.user_create(), now=now)
    seed = device.bin_key
    stored = bytes(AuthenticatorDevice.objects.get(pk=device.pk).key_sealed)

    assert len(seed) == 20 and seed not in stored and seed.hex().encode() not in stored
    assert device.config_url.startswith("otpauth://totp/") and base64.b32encode(seed).decode() in device.config_url
    AuthenticatorDevice.objects.filter(pk=other.pk).update(key_sealed=stored)  # copied onto another row
    with pytest.raises(crypto.CryptoError, match=f"TOTP seed of device {other.pk}"):
        _ = AuthenticatorDevice.objects.get(pk=other.pk).bin_key


def test_backup_codes_are_stored_as_keyed_hashes_and_each_works_once():
    user = factories.user_create()
    factories.totp_device_create(user=user)
    codes = services.backup_codes_issue_unchecked(user=user, count=3, now=timezone.now())
    digests = list(BackupCode.objects.filter(device__user=user).values_list("digest", flat=True))

    assert len(digests) == 3 and not set(codes) & set(digests)
    assert sorted(digests) == sorted(sealing.backup_code_digest(code) for code in codes)
    assert services.backup_codes_unused(user=user, codes=[*codes, "zzzzzzzz"]) == codes
    # Typed in upper case with a space, it still matches; once used, it is gone.
    typed = f"{codes[0][:4].upper()} {codes[0][4:].upper()}"
    device = services.otp_sign_in_verify(user=user, code=typed, now=timezone.now())
    assert device.persistent_id.startswith("accounts.backupcodedevice/")
    with pytest.raises(services.TwoFactorInvalid):
        services.otp_sign_in_verify(user=user, code=codes[0], now=timezone.now())
    assert services.backup_codes_left(user) == 2
    assert services.backup_codes_unused(user=user, codes=codes) == codes[1:]


def test_rotation_reseals_totp_seeds_and_codes_still_verify(settings, capsys):
    user = factories.user_create()
    device = factories.totp_device_create(user=user)
    seed = device.bin_key
    old_version = crypto.sealed_version(device.key_sealed)
    settings.CARDKEY_MASTER_KEYS = f"rotated:{_new_master()},{settings.CARDKEY_MASTER_KEYS}"

    call_command("rotate_master_key")
    settings.CARDKEY_MASTER_KEYS = settings.CARDKEY_MASTER_KEYS.split(",")[0]  # the old key is gone

    assert "1 re-sealed" in capsys.readouterr().out
    device.refresh_from_db()
    assert old_version != "rotated" and crypto.sealed_version(device.key_sealed) == "rotated"
    assert device.bin_key == seed
    assert services.otp_sign_in_verify(user=user, code=factories.totp_code(device), now=timezone.now()) == device


def test_rotation_with_a_seed_under_a_missing_key_changes_nothing(settings):
    device = factories.totp_device_create(user=factories.user_create())
    before = bytes(device.key_sealed)
    settings.CARDKEY_MASTER_KEYS = f"v9:{_new_master()}"  # the seed's master key is gone

    with pytest.raises(Exception, match="not in CARDKEY_MASTER_KEYS"):
        call_command("rotate_master_key")
    device.refresh_from_db()
    assert bytes(device.key_sealed) == before
