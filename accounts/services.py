from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import models, transaction
from django.utils.translation import gettext as _

from accounts.models import Alert, AuditEntry, User


def audit_record(
    *,
    action: str,
    subject: models.Model,
    now: datetime,
    actor: User | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit line. Call it inside the transaction of the change it records."""
    return AuditEntry.objects.create(
        at=now,
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        subject_type=subject._meta.label_lower,
        subject_id=str(subject.pk),
        data=data or {},
    )


def audit_record_many(*, entries: list[AuditEntry]) -> None:
    """Append many audit lines at once (a batch job); call it inside the batch's transaction."""
    AuditEntry.objects.bulk_create(entries, batch_size=1000)


# --- two-factor authentication (django-otp) ---------------------------------------------------------


class TwoFactorRequired(Exception):
    """The user has no confirmed TOTP device: they must enrol one first."""


class TwoFactorInvalid(Exception):
    """The code is wrong, reused, or the device is throttled after failures."""


def totp_device_confirmed(user: User):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


@transaction.atomic
def totp_enrol_start(*, user: User, now: datetime):
    """An unconfirmed TOTP device for the QR page (the same one until it is confirmed)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
        audit_record(action="2fa.enrol_started", subject=user, now=now, actor=user)
    return device


def _backup_codes_new(*, user: User):
    from django_otp.plugins.otp_static.models import StaticDevice, StaticToken

    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="backup", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(settings.BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


def totp_enrol_confirm(*, user: User, code: str, now: datetime) -> list[str]:
    """Confirm the pending device with its first code; returns fresh single-use backup codes.

    A wrong code raises `TwoFactorInvalid` and confirms nothing (the failure counts for throttling).
    """
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        raise TwoFactorRequired
    if not device.verify_token(code.strip()):  # commits its own throttle counter
        raise TwoFactorInvalid
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=True).delete()
        TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
        codes = _backup_codes_new(user=user)
        audit_record(action="2fa.enrolled", subject=user, now=now, actor=user)
    return codes


def backup_codes_regenerate(*, user: User, code: str, now: datetime) -> list[str]:
    """New backup codes (the old ones stop working), after a fresh second factor."""
    otp_fresh_code_check(user=user, code=code)
    with transaction.atomic():
        codes = _backup_codes_new(user=user)
        audit_record(action="2fa.backup_codes_regenerated", subject=user, now=now, actor=user)
    return codes


def otp_fresh_code_check(*, user: User, code: str) -> None:
    """Accept a current TOTP code (or one unused backup code) exactly once, or raise.

    Raises `TwoFactorRequired` without a confirmed TOTP device and `TwoFactorInvalid` for a wrong,
    reused or throttled code. The device row is locked while it is checked, so two requests carrying
    the same code cannot both pass (django-otp refuses any time step at or before `last_t`). Run it
    outside the caller's money transaction: a failure's throttle count must stay committed.
    """
    from django_otp.plugins.otp_static.models import StaticDevice
    from django_otp.plugins.otp_totp.models import TOTPDevice

    code = (code or "").strip().replace(" ", "")
    if totp_device_confirmed(user) is None:
        raise TwoFactorRequired
    if not code:
        raise TwoFactorInvalid
    # A six-digit code is for the app, anything else a backup code: a mistyped app code must not
    # count against (throttle) the backup codes, nor the other way round.
    if code.isdigit() and len(code) <= 8:
        with transaction.atomic():
            device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).order_by("pk").first()
            if device is not None and device.verify_token(code):
                return
        raise TwoFactorInvalid
    with transaction.atomic():
        for device in StaticDevice.objects.select_for_update().filter(user=user, confirmed=True).order_by("pk"):
            if device.verify_token(code):
                return
    raise TwoFactorInvalid


def backup_codes_left(user: User) -> int:
    from django_otp.plugins.otp_static.models import StaticToken

    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


# --- alerts -------------------------------------------------------------------------------------------


@transaction.atomic
def alert_raise(*, key: str, kind: str, message: str, now: datetime, data: dict[str, Any] | None = None) -> bool:
    """Raise an alert for staff once per `key` (a rerun raises nothing new); e-mail staff on commit."""
    alert, created = Alert.objects.get_or_create(
        key=key, defaults={"kind": kind, "message": message, "data": data or {}, "created_at": now}
    )
    if created:
        audit_record(action="alert.raised", subject=alert, now=now, data={"kind": kind})
        recipients = list(
            User.objects.filter(is_staff=True, is_active=True).exclude(email="").values_list("email", flat=True)
        )
        if recipients:
            transaction.on_commit(
                lambda: send_mail(
                    subject=_("[shop alert] %(kind)s") % {"kind": kind}, message=message,
                    from_email=None, recipient_list=recipients, fail_silently=True,
                )
            )
    return created
