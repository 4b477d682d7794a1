"""Move every django-otp TOTP device and backup code into the accounts devices, then delete the old rows.

The TOTP seed is sealed under the newest master key (CARDKEY_MASTER_KEYS, from the settings, as at run
time) bound to the new row; each backup code keeps only its keyed hash. A session verified by an old
device is no longer verified: its user enters a code again. Backwards, TOTP devices go back with their
seeds; backup codes cannot (only their hashes are kept), so their users issue new ones.
"""

from django.db import migrations

from accounts import sealing

TIMESTAMPS_AND_THROTTLING = (
    "user_id",
    "name",
    "confirmed",
    "throttling_failure_timestamp",
    "throttling_failure_count",
    "created_at",
    "last_used_at",
)
TOTP_FIELDS = (*TIMESTAMPS_AND_THROTTLING, "step", "t0", "digits", "tolerance", "drift", "last_t")


def forwards(apps, schema_editor):
    OldTOTP = apps.get_model("otp_totp", "TOTPDevice")
    OldStatic = apps.get_model("otp_static", "StaticDevice")
    AuthenticatorDevice = apps.get_model("accounts", "AuthenticatorDevice")
    BackupCodeDevice = apps.get_model("accounts", "BackupCodeDevice")
    BackupCode = apps.get_model("accounts", "BackupCode")
    for old in OldTOTP.objects.order_by("pk"):
        new = AuthenticatorDevice.objects.create(key_sealed=b"", **{f: getattr(old, f) for f in TOTP_FIELDS})
        new.key_sealed = sealing.totp_seed_seal(bytes.fromhex(old.key), device_pk=new.pk)
        new.save(update_fields=["key_sealed"])
    OldTOTP.objects.all().delete()
    for old in OldStatic.objects.order_by("pk"):
        new = BackupCodeDevice.objects.create(**{f: getattr(old, f) for f in TIMESTAMPS_AND_THROTTLING})
        BackupCode.objects.bulk_create(
            [BackupCode(device=new, digest=sealing.backup_code_digest(t.token)) for t in old.token_set.all()]
        )
    OldStatic.objects.all().delete()  # the tokens go with their devices


def backwards(apps, schema_editor):
    OldTOTP = apps.get_model("otp_totp", "TOTPDevice")
    AuthenticatorDevice = apps.get_model("accounts", "AuthenticatorDevice")
    for new in AuthenticatorDevice.objects.order_by("pk"):
        seed = sealing.totp_seed_unseal(bytes(new.key_sealed), device_pk=new.pk)
        OldTOTP.objects.create(key=seed.hex(), **{f: getattr(new, f) for f in TOTP_FIELDS})
    AuthenticatorDevice.objects.all().delete()
    apps.get_model("accounts", "BackupCodeDevice").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_two_factor_devices_with_sealed_seeds_and_hashed_codes"),
        ("otp_totp", "0003_add_timestamps"),
        ("otp_static", "0003_add_timestamps"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
