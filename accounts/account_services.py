"""Every write about a person's own account: sign-up and e-mail verification, API tokens, the sign-in
history and its new-device alert, tracked sessions, password changes, "this wasn't me", and the
lockout's unlock link.

Each writes its audit line (`audit_record`) in its own transaction and sends e-mail only on commit.
Signed links use `django.core.signing` with one salt per purpose, so a link made for one thing never
opens another.
"""

import hashlib
import logging
import secrets
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.tokens import default_token_generator
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import translation
from django.utils.crypto import salted_hmac
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts import hooks
from accounts.models import AccountApiToken, AuditAction, SignIn, StaffApiToken, User, UserSession
from accounts.services import audit_record
from core.device import network_of
from core.errors import Refused
from core.mail import mail_send

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "cka_"  # noqa: S105 - a label, not a secret; tells an account token from a merchant's "cks_"
MERCHANT_TOKEN_SCOPES = ["read", "stock", "orders", "money"]
VERIFY_SALT = "accounts.email-verify"
NOT_ME_SALT = "accounts.not-me"
UNLOCK_SALT = "accounts.unlock"


class AccountRefused(Refused):
    """A request about an account that the rules refuse; nothing changed."""

    code_statuses = {
        **Refused.code_statuses,
        "invalid_credentials": 401,
        "otp_required": 401,
        "bad_otp": 401,
        "locked_out": 429,
    }
    code_fields = {"email_taken": "email", "bad_email": "email", "weak_password": "password"}


def _link(path: str) -> str:
    return settings.SHOP_BASE_URL.rstrip("/") + path


def _mail_on_commit(*, user: User, event: str, subject, body, **values) -> None:
    """E-mail `user` once the transaction commits, in their language; a mail failure is logged, never
    raised into a request whose change is already committed."""
    to, language, user_pk = user.email, user.language or settings.LANGUAGE_CODE, user.pk
    if not to:
        return

    def send() -> None:
        try:
            with translation.override(language):
                mail_send(event=event, subject=str(subject) % values, body=str(body) % values, to=[to])
        except Exception:
            logger.exception("accounts.email_failed", extra={"event": event, "user": user_pk})

    transaction.on_commit(send)


# --- sign-up and e-mail verification --------------------------------------------------------------------


def _email_checked(email: str) -> str:
    email = (email or "").strip()
    try:
        validate_email(email)
    except ValidationError:
        raise AccountRefused(_("Enter a valid e-mail address."), code="bad_email") from None
    if len(email) > 150:  # it is the username too
        raise AccountRefused(_("This e-mail address is too long."), code="bad_email")
    return User.objects.normalize_email(email)


def _email_taken() -> AccountRefused:
    return AccountRefused(
        _("An account with this e-mail address already exists. Sign in, or reset your password."),
        code="email_taken",
    )


@transaction.atomic
def account_signup(*, email: str, password: str, now: datetime, language: str = "", ip: str | None = None) -> User:
    """A buyer's account, signed up with an e-mail address and a password that passes Django's
    validators. The e-mail is unverified until the link mailed on commit is followed. Refused, with
    nothing created: `bad_email`, `email_taken` (any case), `weak_password` (the validators' messages)."""
    email = _email_checked(email)
    if User.objects.filter(Q(email__iexact=email) | Q(username__iexact=email)).exists():
        raise _email_taken()
    if language and language not in dict(settings.LANGUAGES):
        language = ""
    user = User(username=email.lower(), email=email, language=language)
    try:
        validate_password(password or "", user=user)
    except ValidationError as error:
        raise AccountRefused(" ".join(error.messages), code="weak_password") from None
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:  # a racing sign-up with the same address won
        raise _email_taken() from None
    audit_record(action=AuditAction.ACCOUNT_SIGNED_UP, subject=user, now=now, actor=user, data={"ip": ip or ""})
    email_verification_send(user=user)
    return user


def email_verification_token(user: User) -> str:
    return signing.dumps({"u": user.pk, "e": user.email.lower()}, salt=VERIFY_SALT)


def email_verification_send(*, user: User) -> None:
    """Mail the signed verification link (on commit). It expires after `ACCOUNT_LINK_MAX_AGE_SECONDS`."""
    url = _link(reverse("accounts:verify_email", args=[email_verification_token(user)]))
    _mail_on_commit(
        user=user,
        event="account.verify_email",
        subject=gettext_lazy("Confirm your e-mail address"),
        body=gettext_lazy(
            "Welcome to the shop. Confirm that this is your e-mail address by opening this link:\n\n%(url)s\n\n"
            "The link works for 3 days. If you did not sign up, ignore this message."
        ),
        url=url,
    )


@transaction.atomic
def email_verify(*, token: str, now: datetime) -> User:
    """Mark the e-mail verified by the signed link and attach the guest orders placed with it
    (`hooks.EMAIL_VERIFIED`, in this transaction). Following the link again changes nothing. Refused:
    `link_expired`, `bad_link` (forged, or for an address the account no longer has)."""
    try:
        data = signing.loads(token, salt=VERIFY_SALT, max_age=settings.ACCOUNT_LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise AccountRefused(_("This link has expired. Sign in and ask for a new one."), code="link_expired") from None
    except signing.BadSignature:
        raise AccountRefused(_("This link is not valid."), code="bad_link") from None
    user = User.objects.select_for_update().filter(pk=data.get("u")).first()
    if user is None or user.email.lower() != data.get("e"):
        raise AccountRefused(_("This link is not valid."), code="bad_link")
    if user.email_verified_at is not None:
        return user
    User.objects.filter(pk=user.pk).update(email_verified_at=now)
    user.email_verified_at = now
    audit_record(action=AuditAction.ACCOUNT_EMAIL_VERIFIED, subject=user, now=now, actor=user)
    for hook in hooks.EMAIL_VERIFIED:
        hook(user=user, now=now)
    return user


@transaction.atomic
def account_language_set(*, user: User, language: str, now: datetime) -> None:
    if language not in dict(settings.LANGUAGES):
        raise AccountRefused(_("Choose one of the listed languages."), code="bad_language")
    User.objects.filter(pk=user.pk).update(language=language)
    user.language = language
    audit_record(
        action=AuditAction.ACCOUNT_LANGUAGE_CHANGED, subject=user, now=now, actor=user, data={"language": language}
    )


# --- API tokens ---------------------------------------------------------------------------------------


def account_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_scopes_for(user: User) -> list[str]:
    """A merchant's token may do everything in the merchant API; staff and buyers need no scopes."""
    return list(MERCHANT_TOKEN_SCOPES) if "merchant" in hooks.roles_of(user) else []


def second_factor_needed(user: User) -> bool:
    """Merchants and staff always give a code to sign in by API; a buyer does once they enrolled an app."""
    import django_otp

    return bool(hooks.roles_of(user) & {"merchant", "staff"}) or django_otp.user_has_device(user, confirmed=True)


@transaction.atomic
def account_api_token_create(
    *, user: User, name: str, now: datetime, ip: str | None = None
) -> tuple[AccountApiToken, str]:
    """A new API token for `user`; returns it with its secret, shown once and never stored. The caller
    has proved who it is (a password and, where `second_factor_needed`, a code)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = AccountApiToken.objects.create(
        user=user,
        name=(name or "").strip()[:100] or _("API token"),
        prefix=secret[:12],
        digest=account_token_digest(secret),
        scopes=token_scopes_for(user),
        created_at=now,
        created_ip=ip or None,
    )
    audit_record(
        action=AuditAction.API_TOKEN_CREATED,
        subject=record,
        now=now,
        actor=user,
        data={"name": record.name, "scopes": record.scopes},
    )
    return record, secret


@transaction.atomic
def account_api_token_revoke(*, token: AccountApiToken, actor: User | None, now: datetime) -> bool:
    """Revoke at once; a revoked token changes nothing and returns False."""
    changed = AccountApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    if changed:
        audit_record(action=AuditAction.API_TOKEN_REVOKED, subject=token, now=now, actor=actor)
    return bool(changed)


def account_api_token_active(*, token: str) -> AccountApiToken | None:
    """The active token whose digest matches, with its user, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return (
        AccountApiToken.objects.select_related("user")
        .filter(digest=account_token_digest(token), revoked_at__isnull=True)
        .first()
    )


def account_api_token_touch(*, token: AccountApiToken, now: datetime) -> None:
    """Note the token's use, at most once a minute (no write on every request)."""
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        AccountApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


# --- sign-ins and the new-device alert ----------------------------------------------------------------


@transaction.atomic
def sign_in_record(
    *,
    user: User,
    now: datetime,
    ip: str,
    user_agent: str,
    device: str | None,
    method: str,
    success: bool,
    reason: str = "",
) -> SignIn:
    """Record one sign-in attempt on `user`'s account. A successful one from a device *and* a network
    (/24, /48) never seen in the account's earlier successful sign-ins e-mails the owner one alert with
    a "this wasn't me" link (on commit). The account's first sign-in ever alerts nobody (there is
    nothing to compare with). Sign-ins of one account are serialised on its row, so two at once from
    a new place send one alert, not two."""
    User.objects.select_for_update().filter(pk=user.pk).first()
    network = network_of(ip or "")
    device = device or ""
    new_place = False
    if success:
        seen = SignIn.objects.filter(user=user, success=True)
        if seen.exists():
            device_seen = bool(device) and seen.filter(device=device).exists()
            network_seen = bool(network) and seen.filter(network=network).exists()
            new_place = not device_seen and not network_seen
    row = SignIn.objects.create(
        user=user,
        at=now,
        ip=ip or None,
        network=network,
        user_agent=(user_agent or "")[:512],
        device=device,
        method=method,
        success=success,
        reason=reason,
        new_place=new_place,
    )
    where = {"ip": ip or "", "network": network, "device": device, "method": method}
    if success:
        audit_record(action=AuditAction.ACCOUNT_SIGNED_IN, subject=user, now=now, actor=user, data=where)
    else:
        audit_record(action=AuditAction.ACCOUNT_SIGN_IN_FAILED, subject=user, now=now, data={**where, "reason": reason})
    if new_place:
        audit_record(
            action=AuditAction.ACCOUNT_NEW_DEVICE, subject=user, now=now, actor=user, data={"sign_in": row.pk, **where}
        )
        _new_device_alert(user=user, sign_in=row)
    return row


def _credential_fingerprint(user: User) -> str:
    """Changes whenever the password does (as Django's reset tokens do): a used "this wasn't me" link
    cannot be replayed after the owner set a new password."""
    return salted_hmac(NOT_ME_SALT, user.password).hexdigest()[:20]


def not_me_token(*, user: User, sign_in: SignIn | None = None) -> str:
    return signing.dumps(
        {"u": user.pk, "s": sign_in.pk if sign_in else None, "h": _credential_fingerprint(user)}, salt=NOT_ME_SALT
    )


def _new_device_alert(*, user: User, sign_in: SignIn) -> None:
    url = _link(reverse("accounts:not_me", args=[not_me_token(user=user, sign_in=sign_in)]))
    _mail_on_commit(
        user=user,
        event="security.new_device",
        subject=gettext_lazy("New sign-in to your account"),
        body=gettext_lazy(
            "Your account was signed in to from a device and a network it has not used before.\n\n"
            "When: %(at)s UTC\nAddress: %(ip)s (network %(network)s)\nBrowser: %(agent)s\n\n"
            "If this was you, there is nothing to do. If it was not, open this link: it signs you out "
            "everywhere, revokes your API tokens and asks you to choose a new password.\n\n%(url)s"
        ),
        at=f"{sign_in.at:%Y-%m-%d %H:%M}",
        ip=sign_in.ip or "?",
        network=sign_in.network or "?",
        agent=sign_in.user_agent or "?",
        url=url,
    )


# --- sessions ---------------------------------------------------------------------------------------


def session_start(*, user: User, now: datetime, ip: str, user_agent: str, device: str | None) -> UserSession:
    """A tracked row for a new signed-in session (the middleware puts its `public_id` in the session)."""
    return UserSession.objects.create(
        user=user,
        public_id=secrets.token_urlsafe(18),
        created_at=now,
        last_seen_at=now,
        ip=ip or None,
        user_agent=(user_agent or "")[:512],
        device=device or "",
    )


@transaction.atomic
def session_end(*, user: User, public_id: str, now: datetime) -> bool:
    """Sign out one of `user`'s sessions (only theirs: another's id changes nothing and returns False)."""
    changed = UserSession.objects.filter(user=user, public_id=public_id, ended_at__isnull=True).update(ended_at=now)
    if changed:
        audit_record(
            action=AuditAction.ACCOUNT_SESSION_ENDED, subject=user, now=now, actor=user, data={"session": public_id[:6]}
        )
    return bool(changed)


def _credentials_end_all(*, user: User, now: datetime, why: str, actor: User | None) -> dict[str, int]:
    """End every session and revoke every API token of `user` (the account's own, staff tokens, and
    what `hooks.CREDENTIALS_REVOKED` covers: the merchant's). A step of its callers' transactions."""
    sessions = UserSession.objects.filter(user=user, ended_at__isnull=True).update(ended_at=now)
    tokens = AccountApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=now)
    tokens += StaffApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=now)
    for hook in hooks.CREDENTIALS_REVOKED:
        tokens += hook(user=user, now=now) or 0
    audit_record(
        action=AuditAction.ACCOUNT_SESSIONS_ENDED,
        subject=user,
        now=now,
        actor=actor,
        data={"why": why, "sessions": sessions, "tokens": tokens},
    )
    return {"sessions": sessions, "tokens": tokens}


@transaction.atomic
def sessions_end_all(*, user: User, now: datetime) -> int:
    """ "Sign out everywhere": every session of `user` ends (API tokens stay; revoke them one by one)."""
    count = UserSession.objects.filter(user=user, ended_at__isnull=True).update(ended_at=now)
    audit_record(
        action=AuditAction.ACCOUNT_SESSIONS_ENDED,
        subject=user,
        now=now,
        actor=user,
        data={"why": "sign_out_all", "sessions": count},
    )
    return count


@transaction.atomic
def password_changed(*, user: User, now: datetime, how: str) -> None:
    """After a password change or reset (already saved): every session and API token of the account
    ends, this one's too; `how` is "change" or "reset"."""
    _credentials_end_all(user=user, now=now, why=f"password_{how}", actor=user)
    audit_record(action=AuditAction.ACCOUNT_PASSWORD_CHANGED, subject=user, now=now, actor=user, data={"how": how})


def password_reset_url(user: User) -> str:
    """A link to Django's reset page for `user` (valid until the password changes or it times out)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return _link(reverse("accounts:password_reset_confirm", args=[uid, default_token_generator.make_token(user)]))


@transaction.atomic
def password_reset_requested(*, user: User, now: datetime) -> None:
    """Note that a reset link was mailed to `user` (Django's reset form sends it)."""
    audit_record(action=AuditAction.ACCOUNT_PASSWORD_RESET_REQUESTED, subject=user, now=now, data={"by": "form"})


def _not_me_user(token: str) -> User:
    try:
        data = signing.loads(token, salt=NOT_ME_SALT, max_age=settings.ACCOUNT_ALERT_LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise AccountRefused(_("This link has expired."), code="link_expired") from None
    except signing.BadSignature:
        raise AccountRefused(_("This link is not valid."), code="bad_link") from None
    user = User.objects.select_for_update().filter(pk=data.get("u")).first()
    if user is None:
        raise AccountRefused(_("This link is not valid."), code="bad_link")
    if data.get("h") != _credential_fingerprint(user):
        raise AccountRefused(
            _("This link was already used, or your password changed since it was sent."), code="link_used"
        )
    return user


def not_me_check(*, token: str) -> User:
    """The account a "this wasn't me" link is for, or `AccountRefused` (nothing changes)."""
    with transaction.atomic():
        return _not_me_user(token)


@transaction.atomic
def account_compromise_report(*, token: str, now: datetime) -> User:
    """ "This wasn't me": every session ends, every API token is revoked, the password stops working and
    a reset link is mailed (on commit). The link works once (it names the password it was sent under)."""
    user = _not_me_user(token)
    _credentials_end_all(user=user, now=now, why="not_me", actor=None)
    user.set_unusable_password()
    User.objects.filter(pk=user.pk).update(password=user.password)
    audit_record(action=AuditAction.ACCOUNT_COMPROMISE_REPORTED, subject=user, now=now)
    audit_record(action=AuditAction.ACCOUNT_PASSWORD_RESET_REQUESTED, subject=user, now=now, data={"by": "not_me"})
    _mail_on_commit(
        user=user,
        event="security.password_reset",
        subject=gettext_lazy("Choose a new password"),
        body=gettext_lazy(
            "You told us a sign-in was not you. We signed you out everywhere, revoked your API tokens and "
            "switched off your old password. Choose a new one here:\n\n%(url)s"
        ),
        url=password_reset_url(user),
    )
    return user


# --- lockout: the unlock link ---------------------------------------------------------------------------


def unlock_token(user: User) -> str:
    return signing.dumps({"u": user.pk}, salt=UNLOCK_SALT)


@transaction.atomic
def account_locked_out(*, user: User, ip: str) -> None:
    """Note the lockout and mail its owner the unlock link (called by the lockout handler, once per cool-off)."""
    from django.utils import timezone

    now = timezone.now()
    audit_record(action=AuditAction.ACCOUNT_LOCKED_OUT, subject=user, now=now, data={"ip": ip})
    url = _link(reverse("accounts:unlock", args=[unlock_token(user)]))
    _mail_on_commit(
        user=user,
        event="security.locked_out",
        subject=gettext_lazy("Sign-ins to your account are paused"),
        body=gettext_lazy(
            "There were too many wrong passwords for your account (last from %(ip)s), so signing in is "
            "paused for a while. If it was you, open this link to sign in again at once:\n\n%(url)s\n\n"
            "If it was not you, your password held; consider changing it anyway."
        ),
        ip=ip or "?",
        url=url,
    )


@transaction.atomic
def account_unlock(*, token: str, now: datetime) -> User:
    """Lift the lockout on the account named by a signed unlock link (its failures are forgotten).
    Refused: `link_expired` (after `ACCOUNT_LINK_MAX_AGE_SECONDS`), `bad_link`."""
    from axes.utils import reset

    try:
        data = signing.loads(token, salt=UNLOCK_SALT, max_age=settings.ACCOUNT_LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise AccountRefused(_("This link has expired."), code="link_expired") from None
    except signing.BadSignature:
        raise AccountRefused(_("This link is not valid."), code="bad_link") from None
    user = User.objects.filter(pk=data.get("u")).first()
    if user is None:
        raise AccountRefused(_("This link is not valid."), code="bad_link")
    cleared = reset(username=user.get_username())
    audit_record(action=AuditAction.ACCOUNT_UNLOCKED, subject=user, now=now, data={"attempts": cleared})
    return user


def login_url_for(user: User) -> str:
    return reverse("accounts:login") + "?" + urlencode({"username": user.get_username()})
