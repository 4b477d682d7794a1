"""Merchant qualification (KYC, 商户资质审核): the legal or business name and the identity document or
business licence an applicant sends, kept private (sealed under the merchant's data key, in files
outside the static and media roots, read only by staff through an audited service) and deleted
KYC_REJECTED_RETENTION_DAYS after a rejection.

The document is checked by what it is, never by its name: a PNG, JPEG or WebP image that Pillow reads
(re-encoded from its pixels, so no EXIF, GPS position or anything hidden after the image survives) or
a PDF (its header and trailer), at most KYC_DOCUMENT_MAX_BYTES.
"""

import hashlib
import io
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _
from PIL import Image

from accounts.models import AuditAction, User
from accounts.services import audit_record
from shop import crypto
from shop.models import KycKind, Merchant, MerchantKyc, MerchantStatus
from shop.services.errors import ShopError

logger = logging.getLogger(__name__)

# Pillow's format name -> (content type, file extension).
IMAGE_FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}
PDF = ("application/pdf", "pdf")
# An image larger than this many pixels is refused before it is decoded (a decompression bomb).
MAX_PIXELS = 40_000_000
LEGAL_NAME_MAX_LENGTH = 200


@dataclass(frozen=True)
class KycDocument:
    """A checked document, ready to seal: its bytes, type and extension."""

    data: bytes
    content_type: str
    extension: str


@dataclass(frozen=True)
class KycSubmission:
    """What an applicant sends: who they are and the checked document."""

    kind: str
    legal_name: str
    document: KycDocument


def _refused_type() -> ShopError:
    return ShopError(_("The document must be a PNG, JPEG or WebP image, or a PDF."), "bad_kyc_document")


def _too_large() -> ShopError:
    return ShopError(
        _("The document is larger than %(size)d MB.") % {"size": settings.KYC_DOCUMENT_MAX_BYTES // (1024 * 1024)},
        "kyc_document_too_large",
    )


def kyc_document_check(upload) -> KycDocument:
    """Read one upload as an identity document or licence: an image re-encoded from its pixels alone, or
    a PDF as sent. Refused (`ShopError` `kyc_document_too_large`, `bad_kyc_document`) when larger than
    KYC_DOCUMENT_MAX_BYTES or anything else, whatever its name or declared type say."""
    limit = settings.KYC_DOCUMENT_MAX_BYTES
    if upload is None:
        raise ShopError(_("Attach your identity document or business licence."), "kyc_document_required")
    if (getattr(upload, "size", 0) or 0) > limit:
        raise _too_large()
    raw = upload.read(limit + 1)
    if len(raw) > limit:
        raise _too_large()
    if raw.startswith(b"%PDF-"):
        # A PDF ends with %%EOF (perhaps followed by a line break or padding) in its last kilobyte.
        if b"%%EOF" not in raw[-1024:]:
            raise _refused_type()
        return KycDocument(data=raw, content_type=PDF[0], extension=PDF[1])
    try:
        with Image.open(io.BytesIO(raw), formats=list(IMAGE_FORMATS)) as image:
            if image.format not in IMAGE_FORMATS or image.width * image.height > MAX_PIXELS:
                raise _refused_type()
            image_format = image.format
            image.load()
            keep = {"L", "RGB"} if image_format == "JPEG" else {"L", "LA", "RGB", "RGBA"}
            if image.mode not in keep:
                image = image.convert("RGB" if image_format == "JPEG" else "RGBA")
            # A fresh image from the pixels alone: its `info` (EXIF with the camera's GPS, ICC, XMP) is empty.
            clean = Image.frombytes(image.mode, image.size, image.tobytes())
    except ShopError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise _refused_type() from None
    out = io.BytesIO()
    clean.save(out, format=image_format)
    content_type, extension = IMAGE_FORMATS[image_format]
    return KycDocument(data=out.getvalue(), content_type=content_type, extension=extension)


def kyc_submission_check(*, kind: str, legal_name: str, upload) -> KycSubmission:
    """Check a whole KYC step before anything is created: the kind, a one-line name, the document."""
    if kind not in KycKind.values:
        raise ShopError(_("Choose whether you apply as an individual or as a business."), "bad_kyc_kind")
    legal_name = " ".join(legal_name.split())
    if not legal_name or len(legal_name) > LEGAL_NAME_MAX_LENGTH:
        raise ShopError(
            _("Give your legal or business name (at most %(most)d characters).") % {"most": LEGAL_NAME_MAX_LENGTH},
            "bad_legal_name",
        )
    return KycSubmission(kind=kind, legal_name=legal_name, document=kyc_document_check(upload))


def _document_aad(kyc: MerchantKyc) -> bytes:
    return f"cardshop:kyc-document:merchant:{kyc.merchant_id}:{kyc.document_name}".encode()


def kyc_document_path(kyc: MerchantKyc) -> Path:
    return Path(settings.KYC_FILES_ROOT) / str(kyc.merchant_id) / kyc.document_name


# Not durable: a step of the merchant sign-ups (shop/services/merchants.py), inside their transaction.
@transaction.atomic
def merchant_kyc_submit(
    *, merchant: Merchant, submission: KycSubmission, actor: User | None, now: datetime
) -> MerchantKyc:
    """Record a merchant's KYC step and seal its document into a file of its own, once per merchant.

    Should the caller's transaction roll back after the file is written, the file is an orphan no row
    names: sealed, never served, never listed."""
    if MerchantKyc.objects.filter(merchant=merchant).exists():
        raise ShopError(_("This merchant has already sent their qualification."), "kyc_already_submitted")
    document = submission.document
    kyc = MerchantKyc.objects.create(
        merchant=merchant,
        kind=submission.kind,
        legal_name=submission.legal_name,
        document_name=f"{uuid.uuid4().hex}.{document.extension}",
        document_content_type=document.content_type,
        document_size=len(document.data),
        document_sha256=hashlib.sha256(document.data).hexdigest(),
        submitted_at=now,
    )
    sealed = crypto.data_key_seal(merchant=merchant, plaintext=document.data, aad=_document_aad(kyc))
    path = kyc_document_path(kyc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sealed)
    audit_record(
        action=AuditAction.MERCHANT_KYC_SUBMITTED,
        subject=merchant,
        now=now,
        actor=actor,
        data={"kind": kyc.kind, "document_sha256": kyc.document_sha256, "document_size": kyc.document_size},
    )
    logger.info("shop.kyc_submitted", extra={"merchant": merchant.pk})
    return kyc


@transaction.atomic(durable=True)
def merchant_kyc_document_read(*, kyc: MerchantKyc, actor: User, now: datetime) -> bytes:
    """The document in plaintext, for staff only (the caller checked a staff session with a verified
    second factor); each read is an audit line. `ShopError` `kyc_document_gone` once it was deleted."""
    if not actor.is_staff:
        raise ShopError(_("Only staff may read a merchant's documents."), "not_staff")
    kyc = MerchantKyc.objects.select_related("merchant").get(pk=kyc.pk)
    path = kyc_document_path(kyc)
    if not kyc.has_document or not path.is_file():
        raise ShopError(_("This document was deleted."), "kyc_document_gone")
    data = crypto.data_key_open(merchant=kyc.merchant, sealed=path.read_bytes(), aad=_document_aad(kyc))
    audit_record(action=AuditAction.MERCHANT_KYC_DOCUMENT_VIEWED, subject=kyc.merchant, now=now, actor=actor)
    return data


def merchant_kyc_documents_purge(*, now: datetime) -> int:
    """Delete the KYC documents of merchants rejected KYC_REJECTED_RETENTION_DAYS ago or earlier and not
    approved since; returns how many. Each deletion is its own short transaction (row marked, audit
    line) and the file goes after it commits, so a crash leaves at worst a sealed file no row names and
    a re-run finishes the job; safe to run twice or concurrently."""
    cutoff = now - timedelta(days=settings.KYC_REJECTED_RETENTION_DAYS)
    due = MerchantKyc.objects.filter(
        merchant__status=MerchantStatus.REJECTED,
        merchant__rejected_at__lte=cutoff,
        document_deleted_at__isnull=True,
    ).exclude(document_name="")
    deleted = 0
    for pk in due.order_by("pk").values_list("pk", flat=True):
        with transaction.atomic(durable=True):
            kyc = (
                MerchantKyc.objects.select_for_update(of=("self",))
                .filter(pk=pk, document_deleted_at__isnull=True, merchant__status=MerchantStatus.REJECTED)
                .first()
            )
            if kyc is None:  # approved meanwhile, or another run took it
                continue
            path = kyc_document_path(kyc)
            MerchantKyc.objects.filter(pk=pk).update(document_deleted_at=now)
            audit_record(
                action=AuditAction.MERCHANT_KYC_DOCUMENT_DELETED,
                subject=kyc.merchant,
                now=now,
                data={"reason": "rejected", "retention_days": settings.KYC_REJECTED_RETENTION_DAYS},
            )
            transaction.on_commit(lambda path=path: path.unlink(missing_ok=True))
        deleted += 1
    if deleted:
        logger.info("shop.kyc_documents_purged", extra={"count": deleted})
    return deleted
