"""Reads for a person's own security page and activity file; every query is scoped to that person."""

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet

from accounts import hooks
from accounts.hooks import ActivityRow
from accounts.models import AccountApiToken, AuditAction, AuditCheckpoint, AuditEntry, SignIn, User, UserSession

# Audit lines that are the person's own security changes (sign-ins have their own section).
SECURITY_ACTIONS = [
    AuditAction.ACCOUNT_SIGNED_UP,
    AuditAction.ACCOUNT_EMAIL_VERIFIED,
    AuditAction.ACCOUNT_GUEST_ORDERS_ATTACHED,
    AuditAction.ACCOUNT_NEW_DEVICE,
    AuditAction.ACCOUNT_SESSION_ENDED,
    AuditAction.ACCOUNT_SESSIONS_ENDED,
    AuditAction.ACCOUNT_PASSWORD_CHANGED,
    AuditAction.ACCOUNT_PASSWORD_RESET_REQUESTED,
    AuditAction.ACCOUNT_COMPROMISE_REPORTED,
    AuditAction.ACCOUNT_LOCKED_OUT,
    AuditAction.ACCOUNT_UNLOCKED,
    AuditAction.ACCOUNT_LANGUAGE_CHANGED,
    AuditAction.TWO_FACTOR_ENROL_STARTED,
    AuditAction.TWO_FACTOR_ENROLLED,
    AuditAction.TWO_FACTOR_BACKUP_CODES_REGENERATED,
    AuditAction.TWO_FACTOR_FAILED,
    AuditAction.TWO_FACTOR_VERIFIED,
    AuditAction.TWO_FACTOR_PROVISIONED,
]
TOKEN_ACTIONS = [AuditAction.API_TOKEN_CREATED, AuditAction.API_TOKEN_REVOKED]


def sign_ins_recent(*, user: User, now: datetime) -> QuerySet[SignIn]:
    since = now - timedelta(days=settings.ACCOUNT_HISTORY_DAYS)
    return SignIn.objects.filter(user=user, at__gte=since).order_by("-at", "-pk")


def sessions_active(*, user: User, now: datetime) -> QuerySet[UserSession]:
    """Sessions not ended and not expired (a session unused for SESSION_COOKIE_AGE is gone)."""
    since = now - timedelta(seconds=settings.SESSION_COOKIE_AGE)
    return UserSession.objects.filter(user=user, ended_at__isnull=True, last_seen_at__gte=since).order_by(
        "-last_seen_at", "-pk"
    )


def api_tokens_of(*, user: User) -> QuerySet[AccountApiToken]:
    return AccountApiToken.objects.filter(user=user).order_by("revoked_at", "-pk")


def security_changes(*, user: User) -> QuerySet[AuditEntry]:
    own_tokens = [str(pk) for pk in AccountApiToken.objects.filter(user=user).values_list("pk", flat=True)]
    return AuditEntry.objects.filter(
        Q(subject_type=User._meta.label_lower, subject_id=str(user.pk), action__in=SECURITY_ACTIONS)
        | Q(actor=user, action__in=TOKEN_ACTIONS)
        | Q(subject_type=AccountApiToken._meta.label_lower, subject_id__in=own_tokens, action__in=TOKEN_ACTIONS)
    ).order_by("at", "pk")


def _sign_in_rows(user: User) -> Iterator[ActivityRow]:
    for row in SignIn.objects.filter(user=user).order_by("at", "pk"):
        yield ActivityRow(
            at=row.at,
            section="sign_in",
            reference=row.method,
            what="success" if row.success else f"failed: {row.reason or 'unknown'}",
            details=row.user_agent + ("; new device and network" if row.new_place else ""),
            ip=row.ip or "",
            device=row.device,
        )


def _security_rows(user: User) -> Iterator[ActivityRow]:
    for entry in security_changes(user=user):
        data = entry.data or {}
        yield ActivityRow(
            at=entry.at,
            section="security",
            reference=f"{entry.subject_type} {entry.subject_id}",
            what=entry.action,
            details="; ".join(f"{key}={value}" for key, value in sorted(data.items()) if key not in {"ip", "device"}),
            ip=str(data.get("ip", "")),
            device=str(data.get("device", "")),
        )


def activity_rows(*, user: User) -> Iterator[ActivityRow]:
    """Every row of the person's activity file: the other apps' sections (orders, key reveals,
    disputes, withdrawals; `hooks.ACTIVITY_SECTIONS`), then sign-ins and security changes."""
    for name in sorted(hooks.ACTIVITY_SECTIONS):
        yield from hooks.ACTIVITY_SECTIONS[name](user)
    yield from _sign_in_rows(user)
    yield from _security_rows(user)


def activity_recent(*, user: User, now: datetime, limit: int = 15) -> list[ActivityRow]:
    """The newest rows of the other apps' sections (orders, key reveals, disputes, withdrawals) in the
    history window, for the security page (sign-ins have their own table there)."""
    since = now - timedelta(days=settings.ACCOUNT_HISTORY_DAYS)
    rows = [
        row
        for name in sorted(hooks.ACTIVITY_SECTIONS)
        for row in hooks.ACTIVITY_SECTIONS[name](user)
        if row.at is not None and row.at >= since
    ]
    return sorted(rows, key=lambda row: row.at, reverse=True)[:limit]


ACTIVITY_COLUMNS = ["section", "at_utc", "reference", "what", "details", "ip", "device"]


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet must not run a formula a browser's user agent or a statement smuggled in.
    return "'" + text if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text


def activity_csv_write(*, rows: Iterable[ActivityRow], out) -> None:
    writer = csv.writer(out)
    writer.writerow(ACTIVITY_COLUMNS)
    for row in rows:
        at = row.at.strftime("%Y-%m-%d %H:%M:%S") if row.at else ""
        writer.writerow(
            [_cell(value) for value in (row.section, at, row.reference, row.what, row.details, row.ip, row.device)]
        )


TRANSPARENCY_CHECKPOINTS = 24


def audit_checkpoints_published(*, limit: int = TRANSPARENCY_CHECKPOINTS) -> list[AuditCheckpoint]:
    """The newest published heads of the audit chain, newest first (the public transparency page)."""
    return list(AuditCheckpoint.objects.order_by("-seq")[:limit])
