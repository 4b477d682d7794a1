import hashlib
import logging
import math
import os
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts import audit_chain, sealing
from accounts.models import (
    Alert,
    AuditAction,
    AuditCheckpoint,
    AuditEntry,
    AuthenticatorDevice,
    BackupCode,
    BackupCodeDevice,
    Notification,
    SpendingLimit,
    StaffApiToken,
    User,
)
from core import crypto, prepared
from core.errors import Refused
from core.mail import mail_send
from core.money import Currency
from core.money import display as money_display
from core.sql import insert_sql

logger = logging.getLogger(__name__)


# A set made once: `AuditAction.values` builds its list anew on every call (3 % of a checkout's CPU).
_AUDIT_ACTIONS = frozenset(AuditAction.values)


def _action_check(action: str) -> None:
    if action not in _AUDIT_ACTIONS:
        raise ValueError(f"{action!r} is not an audit action: add it to accounts.models.AuditAction.")


def audit_record(
    *,
    action: str,
    subject: models.Model,
    now: datetime,
    actor: User | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit line. Call it inside the transaction of the change it records.

    `action` must be one of `AuditAction` (a `ValueError` otherwise, nothing written): a misspelt
    action would be a line nobody ever finds."""
    entry = _audit_entry(action=action, subject=subject, now=now, actor=actor, data=data)
    database = transaction.get_connection()
    if database.vendor != "postgresql":
        entry.save(force_insert=True)
        return entry
    # The row `save()` would insert, as a statement prepared once per session (core.prepared): every
    # delivery and payment writes one, and compiling the ORM's INSERT cost more than running it.
    text, params = insert_sql(entry, returning_pk=True)
    with database.cursor() as cursor:
        prepared.execute(cursor, text, params)
        entry.pk = cursor.fetchone()[0]
    entry._state.adding, entry._state.db = False, database.alias
    return entry


def audit_record_sql(
    *,
    action: str,
    subject: models.Model,
    now: datetime,
    actor: User | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[str, list[Any]]:
    """`audit_record` as the text and parameters of its INSERT, for a hot path that writes its change
    and the audit line in ONE statement (a data-modifying CTE: the checkout, escrow/checkout_sql.py).
    The same row, checked the same way; the caller runs it inside the transaction of the change."""
    return insert_sql(_audit_entry(action=action, subject=subject, now=now, actor=actor, data=data))


def _audit_entry(*, action: str, subject: models.Model, now: datetime, actor: User | None, data) -> AuditEntry:
    """The audit line's row, unsaved, its action checked."""
    _action_check(action)
    return AuditEntry(
        at=now,
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        subject_type=subject._meta.label_lower,
        subject_id=str(subject.pk),
        data=data or {},
    )


def audit_record_many(*, entries: list[AuditEntry]) -> None:
    """Append many audit lines at once (a batch job); call it inside the batch's transaction."""
    for entry in entries:
        _action_check(entry.action)
    AuditEntry.objects.bulk_create(entries, batch_size=1000)


# --- the audit trail's hash chain (accounts/audit_chain.py) -----------------------------------------

# One sealer at a time (a PostgreSQL advisory lock, taken only by the sealer; writers never wait on it).
# Elsewhere (SQLite, one writer at a time anyway) the unique `seq` refuses a second sealer's batch.
AUDIT_SEAL_LOCK_KEY = 0x61756474  # "audt"


def audit_chain_seal(*, batch_size: int = 1000, max_batches: int = 200) -> int:
    """Chain every audit entry not sealed yet, oldest id first, each batch in its own transaction;
    returns how many were sealed. Safe to run twice or concurrently (a second sealer seals nothing).

    An entry committed after younger ones were sealed still has `seq` NULL, so the next run chains it
    (later in the chain than its id suggests): nothing is ever skipped. Does nothing when
    `AUDIT_CHAIN_ENABLED` is off."""
    if not settings.AUDIT_CHAIN_ENABLED:
        return 0
    total = 0
    for _batch in range(max_batches):
        try:
            sealed = _audit_chain_seal_batch(batch_size=batch_size)
        except IntegrityError:  # another sealer took these seqs first (SQLite): the next run goes on
            break
        total += sealed
        if sealed < batch_size:
            break
    if total:
        logger.info("accounts.audit_sealed", extra={"entries": total})
    return total


@transaction.atomic(durable=True)
def _audit_chain_seal_batch(*, batch_size: int) -> int:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [AUDIT_SEAL_LOCK_KEY])
            if not cursor.fetchone()[0]:
                return 0
    head = AuditEntry.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "hash").first()
    seq, prev_hash = head or (0, audit_chain.GENESIS_HASH)
    unsealed = AuditEntry.objects.filter(seq__isnull=True).order_by("pk").values_list(*audit_chain.CONTENT_FIELDS)
    sealed = []
    for pk, at, actor_id, action, subject_type, subject_id, data in unsealed[:batch_size]:
        seq += 1
        content = audit_chain.entry_content(
            seq=seq,
            pk=pk,
            at=at,
            actor_id=actor_id,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            data=data,
        )
        entry_hash = audit_chain.entry_hash(prev_hash=prev_hash, content=content)
        sealed.append((pk, seq, prev_hash, entry_hash))
        prev_hash = entry_hash
    _audit_chain_write(sealed)
    return len(sealed)


def _audit_chain_write(sealed: list[tuple[int, int, str, str]]) -> None:
    """Fill in (pk, seq, prev_hash, hash) of entries still unsealed; one statement on PostgreSQL."""
    if not sealed:
        return
    if connection.vendor != "postgresql":
        entries = [AuditEntry(pk=pk, seq=seq, prev_hash=prev, hash=hash_) for pk, seq, prev, hash_ in sealed]
        AuditEntry.objects.bulk_update(entries, ["seq", "prev_hash", "hash"], batch_size=500)
        return
    from psycopg2.extras import execute_values  # the PostgreSQL driver: only on PostgreSQL

    table = AuditEntry._meta.db_table
    with connection.cursor() as cursor:
        execute_values(
            cursor.cursor,
            f"UPDATE {table} AS e SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "  # noqa: S608 - our table
            "FROM (VALUES %s) AS v (id, seq, prev_hash, hash) WHERE e.id = v.id AND e.seq IS NULL",
            sealed,
            template="(%s::bigint, %s::bigint, %s, %s)",
            page_size=1000,
        )


@transaction.atomic
def audit_checkpoint_publish(*, now: datetime) -> AuditCheckpoint | None:
    """Publish the chain's head as a checkpoint (shown on /transparency/), unless it has not moved since
    the last one. Safe to run twice: one checkpoint per `seq`."""
    head = AuditEntry.objects.filter(seq__isnull=False).order_by("-seq").only("pk", "seq", "hash").first()
    if head is None or AuditCheckpoint.objects.filter(seq__gte=head.seq).exists():
        return None
    checkpoint, _created = AuditCheckpoint.objects.get_or_create(
        seq=head.seq, defaults={"hash": head.hash, "entry": head, "published_at": now}
    )
    return checkpoint


# --- spending limits --------------------------------------------------------------------------------

SPENDING_LIMIT_RAISE_DELAY = timedelta(hours=24)


def spending_day_start(now: datetime) -> datetime:
    """Midnight of `now`'s day in the shop's time zone (`SPENDING_LIMIT_TIME_ZONE`): a limit is per day."""
    zone = ZoneInfo(settings.SPENDING_LIMIT_TIME_ZONE)
    return now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)


@transaction.atomic
def spending_limit_set(*, user: User, currency: str, amount: int | None, now: datetime) -> SpendingLimit:
    """Set `user`'s daily limit in `currency` (minor units; None removes it). Lower than the limit in
    force: applies at once, and cancels a raise still waiting. Higher (or removed): applies 24 hours
    from now; until then the limit in force stays. Audited either way."""
    if amount is not None and amount < 0:
        raise Refused(_("A limit cannot be negative."), code="invalid")
    if currency not in Currency.values:
        raise Refused(_("Unknown currency."), code="invalid")
    limit, _created = SpendingLimit.objects.select_for_update().get_or_create(
        user=user, currency=currency, defaults={"updated_at": now}
    )
    current = limit.effective_amount(now)
    lowers = amount is not None and (current is None or amount <= current)
    if lowers:
        limit.amount, limit.pending_amount, limit.pending_from = amount, None, None
    else:
        limit.amount = current
        limit.pending_amount, limit.pending_from = amount, now + SPENDING_LIMIT_RAISE_DELAY
    limit.updated_at = now
    limit.save(update_fields=["amount", "pending_amount", "pending_from", "updated_at"])
    audit_record(
        action=AuditAction.SPENDING_LIMIT_CHANGED,
        subject=user,
        now=now,
        actor=user,
        data={
            "currency": currency,
            "amount": amount,
            "applies_from": (now if lowers else limit.pending_from).isoformat(),
        },
    )
    return limit


def spending_limit_refusal(
    *, user: User | None, currency: str, amount: int, now: datetime, spent_since: Callable[[datetime], int]
) -> str | None:
    """Inside a checkout's transaction: the message for the buyer if spending `amount` more would cross
    their daily limit in `currency` (saying the limit and what is left today), else None.
    `spent_since(day_start)` is what the buyer has spent today (the caller knows orders; accounts does not).

    It locks the buyer's limit row first and counts after, so two concurrent checkouts of one buyer
    count one after the other: the second sees the first's order once the first commits."""
    if user is None or not user.is_authenticated:
        return None
    limit = SpendingLimit.objects.select_for_update().filter(user=user, currency=currency).first()
    daily = limit.effective_amount(now) if limit is not None else None
    if daily is None:
        return None
    left = max(0, daily - spent_since(spending_day_start(now)))
    if amount <= left:
        return None
    return _(
        "This order would cross your daily spending limit of %(limit)s: %(left)s is left today. "
        "You can change the limit on your account's limits page (a higher limit applies after 24 hours)."
    ) % {"limit": money_display(daily, currency), "left": money_display(left, currency)}


# --- two-factor authentication (django-otp) ---------------------------------------------------------


class TwoFactorRequired(Exception):
    """The user has no confirmed TOTP device: they must enrol one first."""


class TwoFactorInvalid(Exception):
    """The code is wrong, reused, or the device is throttled after failures."""


class TwoFactorThrottled(TwoFactorInvalid):
    """Too many wrong codes in a row: the device refuses every code (even a right one) for a while."""


def totp_device_confirmed(user: User) -> AuthenticatorDevice | None:
    return AuthenticatorDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def _totp_device_new(*, user: User, confirmed: bool) -> AuthenticatorDevice:
    """A device with a fresh 160-bit seed, sealed bound to the new row (so it needs the row's pk first)."""
    with transaction.atomic():
        device = AuthenticatorDevice.objects.create(
            user=user, name="authenticator", confirmed=confirmed, key_sealed=b""
        )
        device.key_sealed = sealing.totp_seed_seal(os.urandom(20), device_pk=device.pk)
        AuthenticatorDevice.objects.filter(pk=device.pk).update(key_sealed=device.key_sealed)
    return device


@transaction.atomic(durable=True)
def totp_enrol_start(*, user: User, now: datetime) -> AuthenticatorDevice:
    """An unconfirmed TOTP device for the QR page (the same one until it is confirmed)."""
    device = AuthenticatorDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = _totp_device_new(user=user, confirmed=False)
        audit_record(action=AuditAction.TWO_FACTOR_ENROL_STARTED, subject=user, now=now, actor=user)
    return device


def _backup_codes_new(*, user: User, count: int | None = None) -> list[str]:
    # The device is kept (only its codes change): a session verified by a backup code stays verified,
    # because django-otp remembers the device, not the code. Only each code's keyed hash is stored.
    device = BackupCodeDevice.objects.filter(user=user).order_by("pk").first()
    if device is None:
        device = BackupCodeDevice.objects.create(user=user, name="backup", confirmed=True)
    BackupCodeDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    BackupCodeDevice.objects.filter(pk=device.pk).update(confirmed=True)
    BackupCode.objects.filter(device=device).delete()
    codes = [sealing.backup_code_new() for _ in range(count or settings.BACKUP_CODE_COUNT)]
    BackupCode.objects.bulk_create([BackupCode(device=device, digest=sealing.backup_code_digest(c)) for c in codes])
    return codes


class CurrentCodeInvalid(TwoFactorInvalid):
    """Replacing an authenticator needs a fresh code from the one in place, and this one was not."""


def totp_enrol_confirm(*, user: User, code: str, now: datetime, current_code: str = "") -> list[str]:
    """Confirm the pending device with its first code; returns fresh single-use backup codes.

    Replacing an app already in place is a security change: it also needs `current_code`, a fresh code
    from that app or a backup code, else `CurrentCodeInvalid`. A wrong code raises `TwoFactorInvalid`
    and confirms nothing (the failure counts for throttling).
    """
    device = AuthenticatorDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        raise TwoFactorRequired
    if totp_device_confirmed(user) is not None:
        try:
            _otp_code_verify_audited(user=user, code=current_code, now=now, purpose="replace_device")
        except TwoFactorInvalid:
            raise CurrentCodeInvalid from None
    _throttle_capped(device)
    if not device.verify_token(code.strip()):  # commits its own throttle counter
        raise TwoFactorInvalid
    with transaction.atomic(durable=True):
        AuthenticatorDevice.objects.filter(user=user, confirmed=True).delete()
        AuthenticatorDevice.objects.filter(pk=device.pk).update(confirmed=True)
        codes = _backup_codes_new(user=user)
        audit_record(action=AuditAction.TWO_FACTOR_ENROLLED, subject=user, now=now, actor=user)
    return codes


def backup_codes_regenerate(*, user: User, code: str, now: datetime) -> list[str]:
    """New backup codes (the old ones stop working), after a fresh second factor."""
    otp_fresh_code_check(user=user, code=code)
    with transaction.atomic(durable=True):
        codes = _backup_codes_new(user=user)
        audit_record(action=AuditAction.TWO_FACTOR_BACKUP_CODES_REGENERATED, subject=user, now=now, actor=user)
    return codes


def otp_fresh_code_check(*, user: User, code: str, now: datetime | None = None):
    """Accept a current TOTP code (or one unused backup code) exactly once, or raise; returns the device.

    Raises `TwoFactorRequired` without a confirmed TOTP device and `TwoFactorInvalid` for a wrong,
    reused or throttled code (`TwoFactorThrottled` for the last). The device row is locked while it is
    checked, so two requests carrying the same code cannot both pass (django-otp refuses any time step
    at or before `last_t`). Run it outside the caller's money transaction: a failure's throttle count
    and its audit line must stay committed.
    """
    if totp_device_confirmed(user) is None:
        raise TwoFactorRequired
    return _otp_code_verify_audited(user=user, code=code, now=now or timezone.now(), purpose="fresh_code")


def otp_sign_in_verify(*, user: User, code: str, now: datetime):
    """The sign-in's second step: a TOTP code or an unused backup code, each accepted once; returns
    the device that accepted it (for `django_otp.login`).

    Raises `TwoFactorRequired` when the user has no confirmed device at all, `TwoFactorThrottled`
    after too many wrong codes in a row (django-otp's exponential back-off, per device) and
    `TwoFactorInvalid` for a wrong or reused code. Success and failure are both audited; neither runs
    in one transaction with the caller, so a failure's count and audit line are kept.
    """
    import django_otp

    if not django_otp.user_has_device(user, confirmed=True):
        raise TwoFactorRequired
    return _otp_code_verify_audited(user=user, code=code, now=now, purpose="sign_in")


def _otp_code_verify_audited(*, user: User, code: str, now: datetime, purpose: str):
    try:
        device = _otp_code_verify(user=user, code=code)
    except TwoFactorInvalid as error:
        reason = "throttled" if isinstance(error, TwoFactorThrottled) else "wrong_or_reused"
        with transaction.atomic(durable=True):
            audit_record(
                action=AuditAction.TWO_FACTOR_FAILED,
                subject=user,
                now=now,
                actor=user,
                data={"purpose": purpose, "reason": reason},
            )
        raise
    with transaction.atomic(durable=True):
        audit_record(
            action=AuditAction.TWO_FACTOR_VERIFIED,
            subject=user,
            now=now,
            actor=user,
            data={"purpose": purpose, "device": device.persistent_id},
        )
    return device


def _throttle_capped(device) -> None:
    """Stop django-otp's back-off doubling before `OTP_THROTTLE_MAX_DELAY_SECONDS`.

    Its wait is factor * 2**(failures - 1) with no ceiling, so a few slow mistakes locked even the right
    code out for minutes, then hours. Holding the failure count at the last step under the cap keeps
    the wait bounded; every failure is still in the audit trail.
    """
    factor = device.get_throttle_factor()
    if factor <= 0:
        return
    most = max(1, int(math.log2(settings.OTP_THROTTLE_MAX_DELAY_SECONDS / factor)) + 1)
    if device.throttling_failure_count > most:
        type(device).objects.filter(pk=device.pk).update(throttling_failure_count=most)
        device.throttling_failure_count = most


def _otp_code_verify(*, user: User, code: str):
    """The device that accepts `code` (its throttle counter committed either way), or raise."""
    code = (code or "").strip().replace(" ", "")
    if not code:
        raise TwoFactorInvalid
    # A code as long as the app's is for the app, anything else a backup code (eight letters and
    # digits): a mistyped app code must not count against (throttle) the backup codes, nor the other way.
    with transaction.atomic(durable=True):
        totp = AuthenticatorDevice.objects.select_for_update().filter(user=user, confirmed=True).order_by("pk").first()
        if totp is not None and code.isdigit() and len(code) == totp.digits:
            _throttle_capped(totp)
            if not totp.verify_is_allowed()[0]:
                raise TwoFactorThrottled
            if totp.verify_token(code):  # counts a failure for throttling, refuses a used time step
                return totp
            failed = True
        else:
            failed = False
    if failed:
        raise TwoFactorInvalid
    with transaction.atomic(durable=True):
        devices = list(BackupCodeDevice.objects.select_for_update().filter(user=user, confirmed=True).order_by("pk"))
        for device in devices:
            _throttle_capped(device)
        if devices and not any(device.verify_is_allowed()[0] for device in devices):
            raise TwoFactorThrottled
        for device in devices:
            if device.verify_token(code):  # a used backup code is deleted
                return device
    raise TwoFactorInvalid


@transaction.atomic(durable=True)
def totp_device_provision_unchecked(*, user: User, now: datetime):
    """The user's confirmed TOTP device, created confirmed if there is none, WITHOUT a first code.

    For demo data only (`seed_demo` prints the otpauth:// URI for a person to add to an app); a
    request must never reach this: it would let someone enrol a device nobody proved to hold.
    """
    device = totp_device_confirmed(user)
    if device is None:
        device = _totp_device_new(user=user, confirmed=True)
        audit_record(
            action=AuditAction.TWO_FACTOR_PROVISIONED, subject=user, now=now, data={"device": device.persistent_id}
        )
    return device


@transaction.atomic(durable=True)
def backup_codes_issue_unchecked(*, user: User, count: int, now: datetime) -> list[str]:
    """Replace the user's backup codes with `count` new ones WITHOUT a fresh second factor.

    For demo data only; a request goes through `backup_codes_regenerate`, which asks for a code.
    """
    codes = _backup_codes_new(user=user, count=count)
    audit_record(action=AuditAction.TWO_FACTOR_BACKUP_CODES_REGENERATED, subject=user, now=now, data={"by": "seed"})
    return codes


def backup_codes_unused(*, user: User, codes: list[str]) -> list[str]:
    """Which of `codes` are still unused backup codes of the user (in the given order)."""
    digests = {code: sealing.backup_code_digest(code) for code in codes}
    unused = set(
        BackupCode.objects.filter(device__user=user, device__confirmed=True, digest__in=digests.values()).values_list(
            "digest", flat=True
        )
    )
    return [code for code in codes if digests[code] in unused]


def backup_codes_left(user: User) -> int:
    return BackupCode.objects.filter(device__user=user, device__confirmed=True).count()


@transaction.atomic
def totp_seeds_reseal(*, now: datetime) -> tuple[int, int]:
    """Re-seal every TOTP seed under the newest master key (part of `rotate_master_key`).

    All or nothing: a seed that does not open (its master key missing or wrong) raises
    `core.crypto.CryptoError` naming the device, and nothing changes. Returns (re-sealed, already
    on the newest key).
    """
    resealed = current = 0
    for device in AuthenticatorDevice.objects.select_for_update().order_by("pk"):
        aad = sealing.totp_seed_aad(device.pk)
        fresh = crypto.resealed(
            bytes(device.key_sealed), associated_data=aad, what=f"the TOTP seed of device {device.pk}"
        )
        if fresh is None:
            current += 1
            continue
        AuthenticatorDevice.objects.filter(pk=device.pk).update(key_sealed=fresh)
        audit_record(
            action=AuditAction.TWO_FACTOR_SEED_RESEALED,
            subject=device,
            now=now,
            data={"from": crypto.sealed_version(device.key_sealed), "to": crypto.sealed_version(fresh)},
        )
        resealed += 1
    return resealed, current


# --- alerts -------------------------------------------------------------------------------------------


@transaction.atomic
def alert_raise(*, key: str, kind: str, message: str, now: datetime, data: dict[str, Any] | None = None) -> bool:
    """Raise an alert for staff once per `key` (a rerun raises nothing new); e-mail staff on commit."""
    alert, created = Alert.objects.get_or_create(
        key=key, defaults={"kind": kind, "message": message, "data": data or {}, "created_at": now}
    )
    if created:
        audit_record(action=AuditAction.ALERT_RAISED, subject=alert, now=now, data={"kind": kind})
        recipients = list(
            User.objects.filter(is_staff=True, is_active=True).exclude(email="").values_list("email", flat=True)
        )
        if recipients:

            def alert_mail() -> None:
                # The committed alert row is what staff act on: no mail problem may fail the caller after it.
                try:
                    mail_send(
                        event="alert.raised",
                        subject=_("[shop alert] %(kind)s") % {"kind": kind},
                        body=message,
                        to=recipients,
                    )
                except Exception:
                    logger.exception("accounts.email_failed", extra={"alert": alert.pk})

            transaction.on_commit(alert_mail)
    return created


# --- the in-site inbox --------------------------------------------------------------------------------


def notification_post(
    *, user_pks: list[int], event: str, text: str, url: str, now: datetime, subject: str = "", key: str | None = None
) -> int:
    """One inbox line per user, in the caller's transaction if there is one; with a `key`, at most one
    per user and key (posting again is a no-op). Returns how many lines are new.

    One INSERT, which is atomic on its own (no transaction or savepoint of its own): with a `key`, on
    PostgreSQL, `ON CONFLICT DO NOTHING RETURNING` skips the users who already have the line (the unique
    `notification_once_per_key`) and names the new ones, even against a racing post."""
    rows = [
        Notification(user_id=pk, event=event, subject=subject, key=key, text=text[:200], url=url[:200], created_at=now)
        for pk in dict.fromkeys(user_pks)
    ]
    if not rows:
        return 0
    if key is None:
        return len(Notification.objects.bulk_create(rows))
    if connection.vendor == "postgresql":
        return _notifications_insert_new(rows)
    with transaction.atomic():
        existing = set(Notification.objects.filter(user_id__in=user_pks, key=key).values_list("user_id", flat=True))
        fresh = [row for row in rows if row.user_id not in existing]
        Notification.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh)


_NOTIFICATION_COLUMNS = ("user_id", "event", "subject", "key", "text", "url", "created_at")


def _notifications_insert_new(rows: list[Notification]) -> int:
    """INSERT the lines, skipping those whose (user, key) is there already; returns how many were new."""
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(_NOTIFICATION_COLUMNS)) + ")"] * len(rows))
    # Only this module's column names and placeholders are formatted in; every value is a parameter.
    sql = (
        f"INSERT INTO {Notification._meta.db_table} ({', '.join(_NOTIFICATION_COLUMNS)}) VALUES {placeholders} "  # noqa: S608
        "ON CONFLICT DO NOTHING RETURNING user_id"
    )
    params = [getattr(row, column) for row in rows for column in _NOTIFICATION_COLUMNS]
    with connection.cursor() as cursor:
        prepared.execute(cursor, sql, params)
        return len(cursor.fetchall())


@transaction.atomic
def notification_read(*, notification: Notification, now: datetime) -> None:
    """Mark one line read (once; a second open keeps the first time)."""
    Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(read_at=now)


@transaction.atomic
def alert_acknowledge(*, alert: Alert, actor: User, now: datetime) -> bool:
    """Staff have looked at the alert: it leaves the open queue (once; False if it had already left)."""
    changed = Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(acknowledged_at=now)
    if changed:
        audit_record(action=AuditAction.ALERT_ACKNOWLEDGED, subject=alert, actor=actor, now=now)
    return bool(changed)


# --- staff API tokens -------------------------------------------------------------------------------

STAFF_TOKEN_PREFIX = "cks_staff_"  # noqa: S105 - a label, not a secret; tells a staff token from a merchant's


class StaffTokenRefused(Refused):
    """A staff token the rules refuse to create; nothing was created."""

    status_code = 403


def staff_api_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def staff_api_token_create(*, user: User, name: str, code: str, now: datetime) -> tuple[StaffApiToken, str]:
    """Create a staff API token after a fresh second factor from `user`; returns it with its secret,
    shown once and never stored. A token acts for staff without any second factor, so only a verified
    moment may mint one: refused (`StaffTokenRefused`, nothing created) for a non-staff user
    ("not_staff"), without a confirmed device ("two_factor_required") or with a wrong or reused code
    ("bad_code")."""
    if not user.is_staff or not user.is_active:
        raise StaffTokenRefused(_("Only staff may create a staff API token."), code="not_staff")
    try:
        otp_fresh_code_check(user=user, code=code, now=now)  # commits on its own: a failure must count
    except TwoFactorRequired:
        raise StaffTokenRefused(
            _("API tokens need two-factor authentication: set it up first."), code="two_factor_required"
        ) from None
    except TwoFactorInvalid:
        raise StaffTokenRefused(
            _("That code is wrong or was already used. Enter a fresh code from your app."), code="bad_code"
        ) from None
    return staff_api_token_create_unchecked(user=user, name=name, now=now)


@transaction.atomic
def staff_api_token_create_unchecked(
    *, user: User, name: str, now: datetime, token: str | None = None
) -> tuple[StaffApiToken, str]:
    """Create a staff API token WITHOUT a fresh second factor (for `staff_api_token_create`, which
    checked one, demo data and tests; a request must never reach it). Returns it with its secret."""
    if not user.is_staff:
        raise StaffTokenRefused(_("Only staff may create a staff API token."), code="not_staff")
    token = token or STAFF_TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = StaffApiToken.objects.create(
        user=user,
        name=name.strip() or _("API token"),
        prefix=token[:14],
        digest=staff_api_token_digest(token),
        created_at=now,
    )
    audit_record(action=AuditAction.API_TOKEN_CREATED, subject=record, now=now, actor=user, data={"name": record.name})
    return record, token


@transaction.atomic
def staff_api_token_revoke(*, token: StaffApiToken, actor: User | None, now: datetime) -> bool:
    """Revoke a staff token at once. Revoking a revoked token changes nothing and returns False."""
    changed = StaffApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    if changed:
        audit_record(action=AuditAction.API_TOKEN_REVOKED, subject=token, now=now, actor=actor)
    return bool(changed)


def staff_api_token_active(*, token: str) -> StaffApiToken | None:
    """The active token whose digest matches, with its user, or None."""
    return (
        StaffApiToken.objects.select_related("user")
        .filter(digest=staff_api_token_digest(token), revoked_at__isnull=True)
        .first()
    )


def staff_api_token_touch(*, token: StaffApiToken, now: datetime) -> None:
    """Note the token's use, at most once a minute (no write on every request)."""
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        StaffApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
