"""Benchmark: the periodic release of 10,000 delivered orders whose inspection window has lapsed.

Run on PostgreSQL, against a database of its own (it is migrated, then filled):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cardshop_b_bench .venv/bin/python bench/auto_release.py

Setup builds every order through the real services (place, signed webhook, delivery); only the
release is timed. Prints seconds, orders per second, and whether `verify_ledger` is clean after.
"""

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from config.celery import app as celery_app  # noqa: E402

ORDERS = int(os.environ.get("BENCH_ORDERS", "10000"))


def main() -> None:
    if connection.vendor != "postgresql":
        sys.exit("Run this on PostgreSQL (set DATABASE_URL).")
    celery_app.conf.task_always_eager = True
    call_command("migrate", verbosity=0)

    from accounts.models import User
    from core.money import to_major
    from escrow import services
    from escrow.gateways.sandbox.gateway import SIGNATURE_HEADER, event_body, signature_header
    from escrow.ledger_checks import ledger_problems
    from escrow.models import Order, OrderStatus
    from shop import services as shop_services
    from shop.models import MerchantStatus

    now = timezone.now()
    tag = int(time.time())
    user = User.objects.create_user(username=f"bench{tag}", password="x")
    merchant = shop_services.merchant_create(user=user, name="Bench", now=now, status=MerchantStatus.APPROVED)
    product = shop_services.product_create(
        merchant=merchant,
        title="Bench card",
        price=1999,
        currency="CNY",
        now=now,
        inspection_hours=1,
        max_per_order=1,
    )
    for start in range(0, ORDERS, 2000):
        keys = [f"BENCH-{tag}-{i:06d}" for i in range(start, min(start + 2000, ORDERS))]
        shop_services.keys_import_batch(product=product, keys=keys, now=now)

    started = time.perf_counter()
    for i in range(ORDERS):
        placed = services.order_place(
            product_pk=product.pk, quantity=1, email="b@example.com", buyer=None, now=timezone.now()
        )
        payment = placed.payment
        body = event_body(
            event_type="payment.succeeded",
            payment_id=payment.payment_id,
            amount=to_major(payment.amount, "CNY"),
            currency="CNY",
        )
        services.webhook_receive(
            gateway_name="sandbox",
            body=body,
            now=timezone.now(),
            headers={SIGNATURE_HEADER: signature_header(body=body, timestamp=int(time.time()))},
        )
        if (i + 1) % 2000 == 0:
            print(f"  setup: {i + 1} orders delivered ({time.perf_counter() - started:.0f} s)", flush=True)
    due = Order.objects.filter(product=product, status=OrderStatus.DELIVERED).count()
    print(f"setup: {due} delivered orders in {time.perf_counter() - started:.1f} s")

    later = timezone.now() + timedelta(hours=2)  # every window has lapsed
    started = time.perf_counter()
    runs = 0
    while Order.objects.filter(product=product, status=OrderStatus.DELIVERED).exists():
        services.orders_release_due(now=later)  # what the periodic task runs
        runs += 1
    elapsed = time.perf_counter() - started
    completed = Order.objects.filter(product=product, status=OrderStatus.COMPLETED).count()
    print(f"release: {completed} orders completed in {elapsed:.2f} s ({completed / elapsed:.0f} orders/s, {runs} run)")

    started = time.perf_counter()
    problems = ledger_problems()
    print(
        f"verify_ledger: {'clean' if not problems else f'{len(problems)} problems'} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    for line in problems[:20]:
        print("  ", line)


if __name__ == "__main__":
    main()
