"""A stock upload whose worker is killed (`kill -9`) mid-file is picked up by the beat's sweeper
(`shop.stock_uploads_resume`) and finishes exactly once: every key imported once, the counters add up.

Real processes: the test's own `redis-server` and `celery -A config worker` subprocesses on
pytest-django's test database (tests/processes.py). The killed worker's task stays unacknowledged in
Redis for its visibility timeout (an hour); without the sweeper the merchant would wait that long.
"""

import contextlib
import time

import psycopg2
import pytest
from django.utils import timezone

from accounts.models import AuditEntry
from shop import services
from shop.models import CardKey, StockUpload, StockUploadSource, StockUploadStatus
from tests import factories
from tests.conftest import requires_postgres
from tests.locks import backend_waiting_for_a_lock
from tests.processes import (
    publishing_to,
    redis_server,
    requires_redis_server,
    test_database_url,
    wait_for,
    worker_running,
)

pytestmark = [
    pytest.mark.celery_worker,
    requires_postgres,
    requires_redis_server,
    pytest.mark.django_db(transaction=True),
]

UNIQUE, REPEATED, BATCH = 6000, 100, 200


@contextlib.contextmanager
def _upload_row_locked(upload_pk: int):
    """Hold the upload's row from another connection: the worker's next batch waits for it mid-file."""
    with contextlib.closing(psycopg2.connect(test_database_url())) as other:
        with other.cursor() as cursor:
            cursor.execute("SELECT 1 FROM shop_stockupload WHERE id = %s FOR UPDATE", [upload_pk])
        yield
        other.rollback()


def test_upload_killed_mid_file_is_resumed_by_the_sweeper_exactly_once(_fast_and_local, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    env = {"MEDIA_ROOT": str(settings.MEDIA_ROOT), "SHOP_STOCK_UPLOAD_BATCH": str(BATCH)}
    sweeper_fast = {
        "SHOP_STOCK_UPLOAD_SWEEP_SECONDS": "1",
        "SHOP_STOCK_UPLOAD_STALL_SECONDS": "2",
        "BEAT_LEASE_SECONDS": "3",
    }
    product = factories.product_create(stock=0, low_stock_threshold=0)
    keys = [f"STOCK-{i:06d}-{'x' * 20}" for i in range(UNIQUE)]
    data = "\n".join(keys + keys[:REPEATED]).encode()

    with redis_server(tmp_path) as server, publishing_to(server.url()):
        with worker_running(broker_url=server.url(), log=tmp_path / "first.log", env=env) as first:
            upload = services.stock_upload_start(
                merchant=product.merchant,
                product_pk=product.pk,
                chunks=[data],
                source=StockUploadSource.FILE,
                original_name="keys.txt",
                actor=product.merchant.user,
                now=timezone.now(),
            )
            wait_for(
                lambda: StockUpload.objects.get(pk=upload.pk).processed > 0,
                seconds=30,
                what=f"the first batch\n{first.log_tail()}",
            )
            with _upload_row_locked(upload.pk):
                wait_for(backend_waiting_for_a_lock, seconds=20, what=f"a batch waiting\n{first.log_tail()}")
                first.stop(kill=True)
            killed_at = time.monotonic()

        stuck = StockUpload.objects.get(pk=upload.pk)
        assert stuck.status == StockUploadStatus.RUNNING
        assert 0 < stuck.processed < UNIQUE + REPEATED
        assert (settings.MEDIA_ROOT / stuck.file_path).exists()

        log = tmp_path / "second.log"
        with worker_running(broker_url=server.url(), log=log, beat=True, env={**env, **sweeper_fast}) as second:
            wait_for(
                lambda: StockUpload.objects.get(pk=upload.pk).status != StockUploadStatus.RUNNING,
                seconds=60,
                what=f"the upload finished\n{second.log_tail()}",
            )
            recovery = time.monotonic() - killed_at
            assert "shop.stock_upload_resumed" in log.read_text()

    done = StockUpload.objects.get(pk=upload.pk)
    print(
        f"\nstock upload resumed: {stuck.processed} of {done.total} entries done when killed, "
        f"finished {recovery:.1f} s after the kill"
    )
    assert done.status == StockUploadStatus.DONE, done.error
    assert (done.total, done.processed) == (UNIQUE + REPEATED, UNIQUE + REPEATED)
    assert (done.imported, done.duplicates, done.rejected) == (UNIQUE, REPEATED, 0)
    assert CardKey.objects.filter(upload=done).count() == UNIQUE
    assert CardKey.objects.filter(product=product).count() == UNIQUE
    assert done.rejections.count() == REPEATED
    assert AuditEntry.objects.filter(action="stock.upload_done", subject_id=str(done.pk)).count() == 1
    assert not (settings.MEDIA_ROOT / done.file_path).exists()  # plaintext keys deleted at the end


def test_sweeper_leaves_moving_uploads_alone_and_claims_a_stalled_one_once(settings, tmp_path, monkeypatch):
    """The claim: a fresh upload is not stalled; a stalled one is queued once, and a second sweep at
    the same moment (a second beat) finds it claimed."""
    from shop.tasks import stock_upload_process_task

    queued: list[int] = []
    settings.MEDIA_ROOT = tmp_path
    settings.SHOP_STOCK_UPLOAD_STALL_SECONDS = 120
    product = factories.product_create(stock=0)
    now = timezone.now()
    upload = services.stock_upload_start(
        merchant=product.merchant,
        product_pk=product.pk,
        chunks=[b"A-1\nA-2\n"],
        source=StockUploadSource.FILE,
        original_name="keys.txt",
        actor=None,
        now=now,
    )
    # Eager tasks finished it already; put it back to "running, never moved" as a killed worker leaves it.
    StockUpload.objects.filter(pk=upload.pk).update(status=StockUploadStatus.RUNNING, progressed_at=None)
    monkeypatch.setattr(stock_upload_process_task, "delay", lambda *, upload_pk: queued.append(upload_pk))

    assert services.stock_uploads_resume_stalled(now=now + timezone.timedelta(seconds=60)) == []
    later = now + timezone.timedelta(seconds=121)
    assert services.stock_uploads_resume_stalled(now=later) == [upload.pk]
    assert services.stock_uploads_resume_stalled(now=later) == []  # the second beat's sweep: nothing
    assert queued == [upload.pk]
