"""Stock uploads: a file or pasted text is checked whole before anything is imported
(`stock_upload_start`), then a task imports it in batches (`stock_upload_process`), each batch
committed on its own, so a killed worker loses nothing and a second run resumes or stands aside.
"""

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce, Now
from django.utils.translation import gettext as _

from accounts.models import AuditAction, User
from accounts.services import audit_record
from core.transitions import StateError
from shop import crypto, stock_files
from shop.models import (
    STOCK_UPLOAD_TRANSITIONS,
    CardKey,
    CardKeyStatus,
    Merchant,
    Product,
    RejectionReason,
    StockDelimiter,
    StockUpload,
    StockUploadRejection,
    StockUploadSource,
    StockUploadStatus,
)
from shop.services.errors import ShopError
from shop.services.merchants import merchant_data_key
from shop.services.products import product_low_stock_check
from shop.services.stock_copy import card_keys_insert_skipping_duplicates
from shop.stock_files import StockFileError

logger = logging.getLogger(__name__)


MAX_KEY_LENGTH = 1024


class StockUploadTakenOver(Exception):
    """Another run of the same upload task moved on first; this one stops without writing."""


def _upload_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "stock-uploads" / name


@transaction.atomic(durable=True)
def stock_upload_start(
    *,
    merchant: Merchant,
    product_pk: int,
    chunks: Iterable[bytes],
    source: str,
    delimiter: str = StockDelimiter.NEWLINE,
    original_name: str = "",
    actor: User | None,
    now: datetime,
) -> StockUpload:
    """Accept a file (or pasted text) of keys for one of the merchant's products and queue its import.

    Everything that can be wrong with the input is found here, before anything is imported: another
    merchant's product (`ShopError` with code `not_found`), an unknown delimiter, a file that is not .txt
    or .csv, empty, binary, not UTF-8/GB18030, over the size limit or with more entries than
    SHOP_STOCK_UPLOAD_MAX_LINES, however they are laid out in lines (`StockFileError`). The file is
    kept under MEDIA_ROOT for the worker and deleted when the import ends.
    """
    product = Product.objects.filter(pk=product_pk, merchant=merchant).first()
    if product is None:
        raise ShopError(_("No such product."), "not_found")
    if not merchant.is_approved:
        raise ShopError(_("Your merchant account is not approved yet."), "not_approved")
    if delimiter not in StockDelimiter.values:
        raise ShopError(_("Unknown delimiter %(value)r.") % {"value": delimiter}, "invalid_delimiter")
    if source == StockUploadSource.FILE and not original_name.lower().endswith((".txt", ".csv")):
        raise StockFileError(_("Send a .txt or .csv file."), "invalid_file_type")
    name = f"{uuid.uuid4().hex}.txt"
    path = _upload_path(name)
    stock_files.write_limited(chunks, path, max_bytes=settings.SHOP_STOCK_UPLOAD_MAX_BYTES)
    try:
        info = stock_files.inspect(path, delimiter=delimiter, max_entries=settings.SHOP_STOCK_UPLOAD_MAX_LINES)
        upload = StockUpload.objects.create(
            merchant=merchant,
            product=product,
            created_by=actor if actor and actor.is_authenticated else None,
            source=source,
            original_name=original_name[:255],
            file_path=f"stock-uploads/{name}",
            delimiter=delimiter,
            encoding=info.encoding,
            total=info.entries,
            created_at=now,
        )
        audit_record(
            action=AuditAction.STOCK_UPLOAD_STARTED,
            subject=upload,
            now=now,
            actor=actor,
            data={"product": product.pk, "entries": info.entries, "encoding": info.encoding, "source": source},
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    from shop.tasks import stock_upload_process_task

    transaction.on_commit(lambda: stock_upload_process_task.delay(upload_pk=upload.pk))
    return upload


def stock_upload_process(*, upload_pk: int, now: datetime) -> StockUpload:
    """Import an upload's file in batches; each batch commits its keys, rejected entries and counters.

    The file is read entry by entry (see shop/stock_files.py), so memory stays flat however the keys are
    laid out in lines. Safe to run twice, even at once: each batch first checks, under a row lock, that
    the upload is still where this run left it (`processed`, the entries done), so a second run either
    resumes where the first stopped, mid-line if need be, or stops itself. A bad file or key material
    marks the upload failed with the reason; keys already committed by earlier batches stay (they are
    real stock, counted in `imported`).
    """
    upload = StockUpload.objects.select_related("merchant", "product").get(pk=upload_pk)
    if upload.status != StockUploadStatus.RUNNING:
        return upload
    batch_size = settings.SHOP_STOCK_UPLOAD_BATCH
    path = Path(settings.MEDIA_ROOT) / upload.file_path
    try:
        sealer = crypto.CardKeySealer(
            data_key=merchant_data_key(upload.merchant), merchant_pk=upload.merchant_id, product_pk=upload.product_id
        )
        entries_done = upload.processed
        batch: list[stock_files.Entry] = []
        entries = stock_files.iter_entries(
            path, encoding=upload.encoding, delimiter=upload.delimiter, skip_entries=entries_done
        )
        for entry in entries:
            batch.append(entry)
            if len(batch) >= batch_size:
                _stock_upload_batch_write(
                    upload=upload, sealer=sealer, entries=batch, entries_from=entries_done, now=now
                )
                entries_done, batch = entries_done + len(batch), []
        _stock_upload_batch_write(upload=upload, sealer=sealer, entries=batch, entries_from=entries_done, now=now)
    except StockUploadTakenOver:
        logger.info("shop.stock_upload_taken_over", extra={"upload": upload_pk})
        return StockUpload.objects.get(pk=upload_pk)
    except (OSError, UnicodeDecodeError, crypto.CardKeyCryptoError) as error:
        logger.warning("shop.stock_upload_failed", extra={"upload": upload_pk, "error": str(error)})
        return _stock_upload_finish(upload=upload, status=StockUploadStatus.FAILED, error=str(error), now=now)
    return _stock_upload_finish(upload=upload, status=StockUploadStatus.DONE, error="", now=now)


@transaction.atomic(durable=True)
def _stock_upload_batch_write(
    *,
    upload: StockUpload,
    sealer: crypto.CardKeySealer,
    entries: list[stock_files.Entry],
    entries_from: int,
    now: datetime,
) -> None:
    claimed = (
        StockUpload.objects.select_for_update()
        .filter(pk=upload.pk, status=StockUploadStatus.RUNNING, processed=entries_from)
        .exists()
    )
    if not claimed:
        raise StockUploadTakenOver(upload.pk)
    rejections: list[tuple[stock_files.Entry, str]] = []
    first_seen: dict[bytes, stock_files.Entry] = {}
    rows = []
    for entry in entries:
        key = None if entry.text is None else crypto.normalise(entry.text)
        if key == "":
            rejections.append((entry, RejectionReason.EMPTY))
        elif key is None or len(key) > MAX_KEY_LENGTH:
            rejections.append((entry, RejectionReason.TOO_LONG))
        else:
            fingerprint = sealer.fingerprint(key)
            if fingerprint in first_seen:
                rejections.append((entry, RejectionReason.DUPLICATE_IN_FILE))
                continue
            first_seen[fingerprint] = entry
            rows.append(
                (
                    upload.product_id,
                    upload.merchant_id,
                    upload.pk,
                    fingerprint,
                    sealer.seal(key, fingerprint),
                    CardKeyStatus.AVAILABLE,
                    now,
                )
            )
    rejected = sum(reason in (RejectionReason.EMPTY, RejectionReason.TOO_LONG) for _entry, reason in rejections)
    rows.sort(key=lambda row: row[3])
    inserted = card_keys_insert_skipping_duplicates(rows)
    conflicted = [fp for fp in first_seen if fp not in inserted]
    if conflicted:
        # Who holds the key now: this upload (an earlier batch of the same file) or older stock.
        holders = {
            bytes(fp): upload_id
            for fp, upload_id in CardKey.objects.filter(
                merchant_id=upload.merchant_id, fingerprint__in=conflicted
            ).values_list("fingerprint", "upload_id")
        }
        for fp in conflicted:
            in_file = holders.get(fp) == upload.pk
            reason = RejectionReason.DUPLICATE_IN_FILE if in_file else RejectionReason.DUPLICATE_EXISTING
            rejections.append((first_seen[fp], reason))
    StockUploadRejection.objects.bulk_create(
        [
            StockUploadRejection(upload_id=upload.pk, line=entry.line, entry=entry.number, reason=reason)
            for entry, reason in rejections
        ],
        batch_size=5000,
    )
    StockUpload.objects.filter(pk=upload.pk).update(
        processed=F("processed") + len(entries),
        imported=F("imported") + len(inserted),
        duplicates=F("duplicates") + len(rejections) - rejected,
        rejected=F("rejected") + rejected,
        progressed_at=Now(),  # the database's clock: web, worker and beat hosts may disagree
    )


def stock_uploads_resume_stalled(*, now: datetime) -> list[int]:
    """Queue the import again of every running upload that has not committed a batch for
    SHOP_STOCK_UPLOAD_STALL_SECONDS (its worker was killed, or its task lost with the broker); returns
    their ids.

    Each is claimed by a compare-and-set of `progressed_at`, so two sweeps at once (two beats) queue it
    once, and a queued run that is lost again is queued again a stall later. The run resumes after the
    last committed batch; if the first worker was alive after all, the two runs meet at the next batch's
    row lock and one stands aside (`StockUploadTakenOver`), so every entry is imported exactly once.
    """
    from shop.tasks import stock_upload_process_task

    stalled_before = now - timedelta(seconds=settings.SHOP_STOCK_UPLOAD_STALL_SECONDS)
    candidates = (
        StockUpload.objects.filter(status=StockUploadStatus.RUNNING)
        .annotate(last_move=Coalesce("progressed_at", "created_at"))
        .filter(last_move__lt=stalled_before)
        .values_list("pk", "progressed_at")
    )
    resumed = []
    for pk, progressed_at in candidates:
        claimed = StockUpload.objects.filter(
            pk=pk, status=StockUploadStatus.RUNNING, progressed_at=progressed_at
        ).update(progressed_at=now)
        if not claimed:  # another sweep took it, or the import moved on
            continue
        logger.warning("shop.stock_upload_resumed", extra={"upload": pk})
        resumed.append(pk)
        try:
            stock_upload_process_task.delay(upload_pk=pk)
        except Exception:  # the broker is down: the upload is still running, so the next sweep retries
            logger.warning("shop.stock_upload_resume_failed", extra={"upload": pk}, exc_info=True)
    return resumed


STOCK_UPLOAD_FINISHED = {
    StockUploadStatus.DONE: AuditAction.STOCK_UPLOAD_DONE,
    StockUploadStatus.FAILED: AuditAction.STOCK_UPLOAD_FAILED,
}


@transaction.atomic(durable=True)
def _stock_upload_finish(*, upload: StockUpload, status: str, error: str, now: datetime) -> StockUpload:
    try:
        STOCK_UPLOAD_TRANSITIONS.apply(model=StockUpload, pk=upload.pk, to=status, error=error, finished_at=now)
    except StateError:
        return StockUpload.objects.get(pk=upload.pk)  # another run finished it
    upload.refresh_from_db()
    audit_record(
        action=STOCK_UPLOAD_FINISHED[status],
        subject=upload,
        now=now,
        data={
            "product": upload.product_id,
            "imported": upload.imported,
            "duplicates": upload.duplicates,
            "rejected": upload.rejected,
            "error": error,
        },
    )
    path = Path(settings.MEDIA_ROOT) / upload.file_path
    transaction.on_commit(lambda: path.unlink(missing_ok=True))  # it holds plaintext keys
    product_low_stock_check(product_pk=upload.product_id, now=now)
    return upload
