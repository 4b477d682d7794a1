"""Stock import benchmark: random 32-character keys into one product, through the upload code path.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cardshop_bench .venv/bin/python bench/stock_import.py --lines 100000
    DATABASE_URL=... .venv/bin/python bench/stock_import.py --lines 1000000
    DATABASE_URL=... .venv/bin/python bench/stock_import.py --lines 1000000 --one-line

`--one-line` writes the keys comma-separated on a single line (uploaded with the comma delimiter): the
worker's peak RSS must match the one-key-per-line run, since the file is read entry by entry.

The web side (`stock_upload_start`: save, check limits and encoding, count) runs in this process; the
import itself (`stock_upload_process`, what the Celery task calls) runs in a fresh child process, like a
worker, and reports its own peak RSS, so the figure is the worker's and not the file generator's.
Migrate the database first (`manage.py migrate`). Prints figures; it is never run as a test.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def _setup():
    import django

    django.setup()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(upload_pk: int) -> None:
    """The worker's side: the same service the Celery task calls."""
    _setup()
    from django.utils import timezone

    from shop import services

    rss_start = _peak_rss_mb()
    started = time.perf_counter()
    upload = services.stock_upload_process(upload_pk=upload_pk, now=timezone.now())
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "status": upload.status,
                "imported": upload.imported,
                "error": upload.error,
                "duplicates": upload.duplicates,
                "rejected": upload.rejected,
                "rss_after_django_mb": rss_start,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--one-line", action="store_true", help="all keys on one line, separated by commas")
    parser.add_argument("--keep", action="store_true", help="keep the bench merchant's keys afterwards")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return

    _setup()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from accounts.models import User
    from shop import services
    from shop.models import CardKey, MerchantStatus, StockDelimiter, StockUpload, StockUploadSource

    settings.SHOP_STOCK_UPLOAD_MAX_LINES = max(settings.SHOP_STOCK_UPLOAD_MAX_LINES, args.lines)
    now = timezone.now()
    stamp = f"bench{int(time.time() * 1000)}"
    user = User.objects.create_user(username=stamp, password=None)
    merchant = services.merchant_create(user=user, name=stamp, now=now, status=MerchantStatus.APPROVED)
    product = services.product_create(merchant=merchant, title="bench", price=100, currency="CNY", now=now)

    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as handle:
        alphabet = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        separator = b"," if args.one_line else b"\r\n"
        for number in range(args.lines):
            handle.write(
                (separator if args.one_line and number else b"") + bytes(alphabet[b & 31] for b in os.urandom(32))
            )
            if not args.one_line:
                handle.write(separator)
        path = Path(handle.name)
    size_mb = path.stat().st_size / 1024 / 1024

    try:
        began = time.perf_counter()
        with open(path, "rb") as source:
            upload = services.stock_upload_start(
                merchant=merchant,
                product_pk=product.pk,
                chunks=iter(lambda: source.read(1 << 20), b""),
                source=StockUploadSource.FILE,
                delimiter=StockDelimiter.COMMA if args.one_line else StockDelimiter.NEWLINE,
                original_name="bench.txt",
                actor=None,
                now=now,
            )
        accepted = time.perf_counter() - began
        # CELERY_TASK_ALWAYS_EAGER is off here, so on_commit only queued the task (nobody consumes the
        # bench's queue); the child below does the worker's job.
        child = subprocess.run(
            [sys.executable, __file__, "--worker", str(upload.pk)], capture_output=True, text=True, check=True
        )
        total = time.perf_counter() - began
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"database           {connection.vendor} ({settings.DATABASES['default']['NAME']})")
        layout = "one line, comma-separated" if args.one_line else "one per line, CRLF"
        print(f"keys               {args.lines:,} ({size_mb:.1f} MB, {layout})")
        print(f"accept (web side)  {accepted:.2f} s  (save, encoding and limit checks, count)")
        print(f"import (worker)    {result['seconds']:.2f} s  -> {args.lines / result['seconds']:,.0f} keys/s")
        print(f"end to end         {total:.2f} s  -> {args.lines / total:,.0f} keys/s (incl. worker start-up)")
        print(
            f"imported           {result['imported']:,}  duplicates {result['duplicates']}  status {result['status']}"
        )
        print(
            f"worker peak RSS    {result['peak_rss_mb']:.0f} MB"
            f"  (after Django set-up: {result['rss_after_django_mb']:.0f} MB)"
        )
        if result["status"] != "done":
            print(f"error: {result['error']}")
    finally:
        path.unlink(missing_ok=True)
        if not args.keep:
            CardKey.objects.filter(merchant=merchant).delete()
            StockUpload.objects.filter(merchant=merchant).delete()


if __name__ == "__main__":
    main()
