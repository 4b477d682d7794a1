"""Merchant API tokens: created after a fresh second factor (the secret is shown once, only its hash
is kept), revoked at once, and touched on use at most once a minute.
"""

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import TwoFactorInvalid, TwoFactorRequired, audit_record, otp_fresh_code_check
from shop.models import ApiScope, Merchant, MerchantApiToken
from shop.services.errors import ShopError

API_TOKEN_PREFIX = "cks_"  # noqa: S105 - a label, not a secret


def api_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_scopes_check(scopes: Iterable[str] | None) -> list[str]:
    """The scopes a token is made with, in their canonical order: every scope when None; else at least
    one, each an `ApiScope` (else `ShopError` "bad_scopes")."""
    if scopes is None:
        return list(ApiScope.values)
    chosen = set(scopes)
    if not chosen or not chosen <= set(ApiScope.values):
        raise ShopError(
            _("Choose one or more scopes among: %(scopes)s.") % {"scopes": ", ".join(ApiScope.values)}, "bad_scopes"
        )
    return [scope for scope in ApiScope.values if scope in chosen]


def merchant_api_token_create(
    *,
    merchant: Merchant,
    name: str,
    actor: User,
    code: str,
    now: datetime,
    scopes: Iterable[str] | None = None,
):
    """Create an API token after a fresh second factor from `actor`; returns it with its secret, shown
    once and never stored. `scopes` (default: every scope) bound what it may call. Refused (`ShopError`,
    nothing created) for scopes that are not `ApiScope`s ("bad_scopes", before the code is spent),
    without a confirmed TOTP device ("two_factor_required") or with a wrong or reused code ("bad_code"):
    a token acts for the merchant without any second factor, so a stolen session alone must not be
    able to mint one."""
    scopes = api_scopes_check(scopes)
    try:
        otp_fresh_code_check(user=actor, code=code)  # commits on its own: a failure must count
    except TwoFactorRequired:
        raise ShopError(
            _("API tokens need two-factor authentication: set it up first."), "two_factor_required"
        ) from None
    except TwoFactorInvalid:
        raise ShopError(
            _("That code is wrong or was already used. Enter a fresh code from your app."), "bad_code"
        ) from None
    return merchant_api_token_create_unchecked(merchant=merchant, name=name, actor=actor, now=now, scopes=scopes)


@transaction.atomic(durable=True)
def merchant_api_token_create_unchecked(
    *,
    merchant: Merchant,
    name: str,
    actor: User | None,
    now: datetime,
    token: str | None = None,
    scopes: Iterable[str] | None = None,
) -> tuple[MerchantApiToken, str]:
    """Create an API token WITHOUT a fresh second factor; returns it with its secret (shown once).

    For `merchant_api_token_create` (which checked one), demo data and tests; a request must never
    reach it. `scopes` default to every scope."""
    scopes = api_scopes_check(scopes)
    token = token or API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = MerchantApiToken.objects.create(
        merchant=merchant,
        name=name.strip() or _("API token"),
        prefix=token[:10],
        digest=api_token_digest(token),
        created_at=now,
        scopes=scopes,
    )
    audit_record(
        action=AuditAction.API_TOKEN_CREATED,
        subject=record,
        now=now,
        actor=actor,
        data={"name": record.name, "scopes": scopes},
    )
    return record, token


@transaction.atomic(durable=True)
def merchant_api_token_revoke(*, token: MerchantApiToken, actor: User | None, now: datetime) -> bool:
    """Revoke a token at once. Revoking a revoked token changes nothing and returns False."""
    changed = MerchantApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    if changed:
        audit_record(action=AuditAction.API_TOKEN_REVOKED, subject=token, now=now, actor=actor)
    return bool(changed)


def merchant_api_token_touch(*, token: MerchantApiToken, now: datetime) -> None:
    """Note the token's use, at most once a minute (no write on every request)."""
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        MerchantApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


def merchant_api_tokens_revoke_all(*, user: User, now: datetime) -> int:
    """Revoke every merchant API token of `user`'s shop at once; returns how many. A step of accounts'
    "every credential ends" transaction (password change, "this wasn't me"), which writes the audit line;
    registered in `accounts.hooks.CREDENTIALS_REVOKED`."""
    return MerchantApiToken.objects.filter(merchant__user=user, revoked_at__isnull=True).update(revoked_at=now)
