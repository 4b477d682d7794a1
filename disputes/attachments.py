"""Dispute screenshots: checked by what Pillow reads in them (never by their name), re-encoded without
their metadata, and stored under `DISPUTE_FILES_ROOT`, outside the static and media roots."""

import io
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _
from PIL import Image

from disputes.models import Attachment, MessageRole
from disputes.services import DisputeError, _locked

logger = logging.getLogger(__name__)

MAX_ATTACHMENTS = 5  # per party and dispute
MAX_BYTES = 5 * 1024 * 1024
# Pillow's format name -> (content type, file extension).
FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}
# A screenshot larger than this many pixels is refused before it is decoded (a decompression bomb).
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    content_type: str
    extension: str


def _refuse(name: str) -> DisputeError:
    return DisputeError(
        _("%(name)s is not a PNG, JPEG or WebP image we can read.") % {"name": name}, code="bad_attachment"
    )


def attachment_clean(upload) -> CleanImage:
    """Read one upload as an image and re-encode it in its own format from its pixels alone, so no EXIF,
    ICC, text chunk or anything hidden after the image survives. Refused (`too_large`, `bad_attachment`)
    for more than 5 MB or anything Pillow does not read as PNG, JPEG or WebP, whatever its name says."""
    name = getattr(upload, "name", "") or _("The file")
    if upload.size > MAX_BYTES:
        raise DisputeError(_("%(name)s is larger than 5 MB.") % {"name": name}, code="too_large")
    raw = upload.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise DisputeError(_("%(name)s is larger than 5 MB.") % {"name": name}, code="too_large")
    try:
        with Image.open(io.BytesIO(raw), formats=list(FORMATS)) as image:
            if image.format not in FORMATS or image.width * image.height > MAX_PIXELS:
                raise _refuse(name)
            image_format = image.format
            image.load()
            keep = {"L", "RGB"} if image_format == "JPEG" else {"L", "LA", "RGB", "RGBA"}
            if image.mode not in keep:
                image = image.convert("RGB" if image_format == "JPEG" else "RGBA")
            # A fresh image from the pixels alone: its `info` (EXIF, ICC, XMP, text) starts empty.
            clean = Image.frombytes(image.mode, image.size, image.tobytes())
    except DisputeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise _refuse(name) from None
    out = io.BytesIO()
    clean.save(out, format=image_format)
    content_type, extension = FORMATS[image_format]
    return CleanImage(data=out.getvalue(), content_type=content_type, extension=extension)


def attachment_path(attachment: Attachment) -> Path:
    return Path(settings.DISPUTE_FILES_ROOT) / str(attachment.dispute_id) / attachment.stored_name


@transaction.atomic
def dispute_attachments_add(*, dispute_pk: int, role: str, uploads: list, now: datetime) -> list[Attachment]:
    """Attach up to 5 screenshots per party to a dispute. Every upload is checked and re-encoded before
    anything is stored, so one bad file (`bad_attachment`, `too_large`) or one too many (`too_many`)
    stores nothing at all: no row, no file. Called inside the caller's transaction (opening, contesting,
    a message), a refusal rolls the whole step back."""
    if role not in {MessageRole.BUYER, MessageRole.MERCHANT, MessageRole.STAFF}:
        raise DisputeError(_("Only the buyer, the merchant or staff may attach files."), code="bad_role")
    if not uploads:
        return []
    dispute = _locked(dispute_pk)
    already = Attachment.objects.filter(dispute=dispute, role=role).count()
    if already + len(uploads) > MAX_ATTACHMENTS:
        raise DisputeError(
            _("Up to %(max)d screenshots per party on a dispute.") % {"max": MAX_ATTACHMENTS}, code="too_many"
        )
    images = [attachment_clean(upload) for upload in uploads]
    attachments, written = [], []
    try:
        for image in images:
            attachment = Attachment.objects.create(
                dispute=dispute,
                role=role,
                stored_name=f"{uuid.uuid4().hex}.{image.extension}",
                content_type=image.content_type,
                size=len(image.data),
                created_at=now,
            )
            path = attachment_path(attachment)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image.data)
            written.append(path)
            attachments.append(attachment)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    # Should the surrounding transaction roll back later, its rows go and these files are orphans with no
    # row pointing at them: never served, never listed.
    logger.info("disputes.attachments_added", extra={"dispute": dispute.pk, "count": len(attachments)})
    return attachments
