"""Merchants: creation with their own data key, sign-up (signed in, or a visitor who learns nothing
about other people's accounts), staff approval and rejection, edits, and re-wrapping every data key
under the newest master key.
"""

import logging
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import audit_record
from shop import crypto
from shop.models import MERCHANT_TRANSITIONS, Merchant, MerchantKyc, MerchantStatus
from shop.services.errors import ShopError
from shop.services.kyc import KycSubmission, merchant_kyc_submit

logger = logging.getLogger(__name__)


# Not durable: a step of the sign-ups below, and the admin's add form runs it inside its own transaction.
@transaction.atomic
def merchant_create(
    *, user: User, name: str, contact: str = "", now: datetime, status: str = MerchantStatus.PENDING
) -> Merchant:
    """Create a merchant with its own data key, sealed under the newest master key."""
    merchant = Merchant.objects.create(
        user=user,
        name=name,
        contact=contact,
        status=status,
        created_at=now,
        data_key_version="",
        data_key_wrapped=b"",
    )
    version, wrapped = crypto.data_key_wrap(data_key=crypto.data_key_generate(), merchant_pk=merchant.pk)
    Merchant.objects.filter(pk=merchant.pk).update(data_key_version=version, data_key_wrapped=wrapped)
    merchant.data_key_version, merchant.data_key_wrapped = version, wrapped
    audit_record(action=AuditAction.MERCHANT_CREATED, subject=merchant, now=now, actor=user)
    return merchant


def merchant_data_key(merchant: Merchant) -> bytes:
    return crypto.merchant_data_key(merchant)


@transaction.atomic(durable=True)
def merchant_signup(
    *, user: User, name: str, contact: str, now: datetime, kyc: KycSubmission | None = None
) -> Merchant:
    """A signed-in user applies to sell: a pending merchant, which staff approve or reject, with its KYC
    step (`kyc`, checked by `kyc_submission_check`) when given: all of it or nothing."""
    return _merchant_application(user=user, name=name, contact=contact, now=now, kyc=kyc)


def _merchant_application(
    *, user: User, name: str, contact: str, now: datetime, kyc: KycSubmission | None = None
) -> Merchant:
    assert transaction.get_connection().in_atomic_block, "a merchant application needs the caller's transaction"
    if Merchant.objects.filter(user=user).exists():
        raise ShopError(_("You have already applied as a merchant."), "already_merchant")
    merchant = merchant_create(user=user, name=name.strip(), contact=contact.strip(), now=now)
    if kyc is not None:
        merchant_kyc_submit(merchant=merchant, submission=kyc, actor=user, now=now)
    return merchant


@transaction.atomic
def merchant_signup_with_account(
    *,
    username: str,
    email: str,
    password: str,
    name: str,
    contact: str,
    now: datetime,
    kyc: KycSubmission | None = None,
) -> Merchant:
    """A visitor without an account applies to sell: the user and the pending merchant together
    (a step of `merchant_signup_visitor`, inside its transaction)."""
    user = User.objects.create_user(username=username, email=email, password=password)
    return _merchant_application(user=user, name=name, contact=contact, now=now, kyc=kyc)


def _signup_email(*, to: str, event: str, subject: str, body: str) -> None:
    from django.core.mail import EmailMessage

    EmailMessage(subject=subject, body=body, to=[to], headers={"X-Shop-Event": event}).send(fail_silently=True)


@transaction.atomic(durable=True)
def merchant_signup_visitor(
    *,
    username: str,
    email: str,
    password: str,
    name: str,
    contact: str,
    now: datetime,
    kyc: KycSubmission | None = None,
) -> Merchant | None:
    """A visitor applies to sell with a new account, and learns nothing about other people's accounts.

    A new username and e-mail get the account, the pending merchant and a welcome e-mail. A username
    or e-mail already in use creates nothing: the existing owner gets a notice instead, and the visitor
    sees exactly what a successful applicant sees (the password is hashed either way, so the answer
    takes as long). Returns the merchant, or None when nothing was created (the KYC document
    included: it is never stored for an account that was not created).
    """
    from django.contrib.auth.hashers import make_password
    from django.db.models import Q

    email = email.strip()
    owners = list(User.objects.filter(Q(username__iexact=username) | Q(email__iexact=email)).order_by("pk"))
    login_url = settings.SHOP_BASE_URL.rstrip("/") + "/accounts/login/"
    if owners:
        make_password(password)
        for owner in owners:
            if owner.email:
                transaction.on_commit(
                    lambda to=owner.email, who=owner.username: _signup_email(
                        to=to,
                        event="merchant.signup_taken",
                        subject=_("Someone tried to open a shop with your account details"),
                        body=_(
                            "Someone applied to sell on the shop with your username or e-mail address. "
                            "Nothing was changed. If it was you, sign in as %(username)s at %(url)s and apply "
                            "from your account; if not, you can ignore this message."
                        )
                        % {"username": who, "url": login_url},
                    )
                )
        logger.info("shop.merchant_signup_taken", extra={"owners": [owner.pk for owner in owners]})
        return None
    merchant = merchant_signup_with_account(
        username=username, email=email, password=password, name=name, contact=contact, now=now, kyc=kyc
    )
    transaction.on_commit(
        lambda: _signup_email(
            to=email,
            event="merchant.signup",
            subject=_("Your application to sell on the shop"),
            body=_(
                "Thank you for applying. Staff review your application shortly. Sign in as %(username)s at "
                "%(url)s to follow it."
            )
            % {"username": username, "url": login_url},
        )
    )
    return merchant


@transaction.atomic(durable=True)
def merchant_approve(*, merchant: Merchant, actor: User | None, now: datetime) -> Merchant:
    """Staff approve a pending (or earlier rejected) merchant; a racing second approval fails.

    A merchant whose KYC step is on file with its document (not deleted) is *verified* from now on
    (`verified_at`, the public badge): staff approve with the name and the document in front of them.
    The audit line says what was verified."""
    kyc = MerchantKyc.objects.filter(merchant_id=merchant.pk).first()
    verified = kyc is not None and kyc.has_document
    MERCHANT_TRANSITIONS.apply(
        model=Merchant,
        pk=merchant.pk,
        to=MerchantStatus.APPROVED,
        rejection_reason="",
        rejected_at=None,
        verified_at=now if verified else None,
    )
    audit_record(
        action=AuditAction.MERCHANT_APPROVED,
        subject=merchant,
        now=now,
        actor=actor,
        data={"verified": kyc.kind if verified else None},
    )
    merchant.refresh_from_db(fields=["status", "rejection_reason", "rejected_at", "verified_at"])
    return merchant


@transaction.atomic(durable=True)
def merchant_reject(*, merchant: Merchant, reason: str, actor: User | None, now: datetime) -> Merchant:
    """Staff reject a pending merchant with a reason the merchant reads on their status page."""
    reason = reason.strip()
    if not reason:
        raise ShopError(_("Give the merchant a reason."), "reason_required")
    MERCHANT_TRANSITIONS.apply(
        model=Merchant,
        pk=merchant.pk,
        to=MerchantStatus.REJECTED,
        from_=[MerchantStatus.PENDING],
        rejection_reason=reason,
        rejected_at=now,  # starts the KYC document's retention clock (merchant_kyc_documents_purge)
    )
    audit_record(action=AuditAction.MERCHANT_REJECTED, subject=merchant, now=now, actor=actor, data={"reason": reason})
    merchant.refresh_from_db(fields=["status", "rejection_reason", "rejected_at"])
    return merchant


MERCHANT_FIELDS = {"name", "contact", "fee_percent", "notify_paid_orders"}


# Not durable: the admin's change form calls it inside the transaction Django opens for the form.
@transaction.atomic
def merchant_update(*, merchant: Merchant, actor: User | None, now: datetime, **fields: object) -> Merchant:
    """Change a merchant's name, contact or fee (`fee_percent`: 0 to 100, None for the platform default).

    Its status moves only through approve/reject. The audit row holds each field's old and new value,
    read under the merchant's row lock; a fee change applies to orders paid from now on."""
    unknown = set(fields) - MERCHANT_FIELDS
    if unknown:
        raise ShopError(f"Not editable: {', '.join(sorted(unknown))}.")
    fee = fields.get("fee_percent")
    if fee is not None and not 0 <= Decimal(fee) <= 100:
        raise ShopError(_("The fee must be between 0 and 100 percent."), "bad_fee")
    old = Merchant.objects.select_for_update().values(*fields).get(pk=merchant.pk) if fields else {}
    Merchant.objects.filter(pk=merchant.pk).update(**fields)
    audit_record(
        action=AuditAction.MERCHANT_UPDATED,
        subject=merchant,
        now=now,
        actor=actor,
        data={"fields": sorted(fields), "old": _json_values(old), "new": _json_values(fields)},
    )
    merchant.refresh_from_db()
    return merchant


def _json_values(values: dict) -> dict:
    """Decimals (a fee) as strings, so an audit row keeps them exactly."""
    return {name: str(value) if isinstance(value, Decimal) else value for name, value in values.items()}


@transaction.atomic
def merchant_data_keys_rewrap(*, now: datetime) -> tuple[int, int]:
    """Re-seal every merchant's data key under the newest master key; card-key rows are not touched.

    All or nothing: if one data key does not open (its master key is missing or wrong), the error names
    the merchant and nothing changes. Returns (re-wrapped, already on the newest key).
    """
    newest, _key = crypto.master_keys()[0]
    rewrapped = current = 0
    for merchant in Merchant.objects.order_by("pk").select_for_update():
        if merchant.data_key_version == newest:
            current += 1
            continue
        data_key = merchant_data_key(merchant)
        version, wrapped = crypto.data_key_wrap(data_key=data_key, merchant_pk=merchant.pk)
        Merchant.objects.filter(pk=merchant.pk).update(data_key_version=version, data_key_wrapped=wrapped)
        audit_record(
            action=AuditAction.MERCHANT_DATA_KEY_REWRAPPED,
            subject=merchant,
            now=now,
            data={"from": merchant.data_key_version, "to": version},
        )
        rewrapped += 1
    return rewrapped, current
