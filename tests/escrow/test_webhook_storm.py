"""A webhook storm through the real HTTP endpoint: 1,000 signed sandbox events from 32 senders at once,
10 % of them sent twice, successes and failures of one payment out of order (a `payment.failed` after
its `payment.succeeded`, and the reverse). Every paid order is delivered exactly once, the orders the
storm does not pay stay where they were, and the ledger is clean.

The server is pytest-django's `live_server` (a threaded WSGI server in this process, on PostgreSQL),
so each event goes through the socket, the middleware, the view and its own transaction; deliveries
run on commit of each payment (eagerly here: the real worker's faults are tests/escrow/test_delivery_faults.py).
"""

import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue

import pytest
from django.db import connection

from accounts.models import AuditEntry
from escrow.ledger_checks import ledger_problems
from escrow.models import Order, OrderStatus, Transfer, WebhookEvent
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]

SENDERS = 32
# Orders by what the storm says about them; unique events: 400 + 2 x 100 + 2 x 100 + 100 = 900, plus 90
# of them sent a second time and 10 a third time: 1,000 requests.
PAID_ONLY, PAID_THEN_FAILED, FAILED_THEN_PAID, FAILED_ONLY, UNTOUCHED = 400, 100, 100, 100, 20


def _event(payment, event_type: str) -> tuple[bytes, dict[str, str]]:
    return factories.signed_webhook(payment=payment, event_type=event_type)


def _post(url: str, request: tuple[bytes, dict[str, str]]) -> tuple[int, str]:
    body, headers = request
    http = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(http, timeout=30) as response:
            return response.status, json.loads(response.read())["result"]
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")[:200]


def test_webhook_storm_delivers_each_paid_order_once(live_server):
    rng = random.Random(15)
    total = PAID_ONLY + PAID_THEN_FAILED + FAILED_THEN_PAID + FAILED_ONLY + UNTOUCHED
    product = factories.product_create(stock=total + 10, price=2500)
    orders = [factories.order_place(product=product, email=f"storm{i}@example.com").order for i in range(total)]
    payments = {order.pk: order.payments.get() for order in orders}
    groups = {}
    cursor = 0
    for name, size in [
        ("paid_only", PAID_ONLY),
        ("paid_then_failed", PAID_THEN_FAILED),
        ("failed_then_paid", FAILED_THEN_PAID),
        ("failed_only", FAILED_ONLY),
        ("untouched", UNTOUCHED),
    ]:
        groups[name] = orders[cursor : cursor + size]
        cursor += size

    # A work item is a sequence one sender posts in order (so "after" really is after); copies of
    # events go in as their own items, so a copy may race its original from another sender.
    items: list[list[tuple[bytes, dict[str, str]]]] = []
    events: list[tuple[bytes, dict[str, str]]] = []
    sequences = {
        "paid_only": ["payment.succeeded"],
        "paid_then_failed": ["payment.succeeded", "payment.failed"],
        "failed_then_paid": ["payment.failed", "payment.succeeded"],
        "failed_only": ["payment.failed"],
    }
    for name, types in sequences.items():
        for order in groups[name]:
            sequence = [_event(payments[order.pk], event_type) for event_type in types]
            items.append(sequence)
            events += sequence
    assert len(events) == 900
    copies = rng.sample(events, 90)
    copies += rng.sample(copies, 10)  # ten events arrive three times
    items += [[copy] for copy in copies]
    rng.shuffle(items)
    assert sum(len(item) for item in items) == 1000

    queue: SimpleQueue = SimpleQueue()
    for item in items:
        queue.put(item)
    url = f"{live_server.url}/payments/sandbox/webhook/"

    def sender() -> list[tuple[int, str]]:
        answers = []
        while True:
            try:
                item = queue.get_nowait()
            except Empty:
                return answers
            answers += [_post(url, request) for request in item]

    logging.disable(logging.INFO)  # 2,000 lines of "delivered" cost the server a third of its time
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=SENDERS) as pool:
            answers = [answer for answers in pool.map(lambda _: sender(), range(SENDERS)) for answer in answers]
    finally:
        logging.disable(logging.NOTSET)
    elapsed = time.monotonic() - started
    print(f"\nwebhook storm: 1000 events from {SENDERS} senders in {elapsed:.1f} s ({1000 / elapsed:.0f}/s)")

    assert len(answers) == 1000
    assert Counter(answers) == {(200, "processed"): 900, (200, "duplicate"): 100}
    assert WebhookEvent.objects.count() == 900

    paid = groups["paid_only"] + groups["paid_then_failed"] + groups["failed_then_paid"]
    paid_pks = [order.pk for order in paid]
    assert Order.objects.filter(pk__in=paid_pks, status=OrderStatus.DELIVERED).count() == len(paid)
    assert Order.objects.filter(status=OrderStatus.DELIVERED).count() == len(paid)
    failed_pks = [order.pk for order in groups["failed_only"]]
    assert Order.objects.filter(pk__in=failed_pks, status=OrderStatus.CANCELLED).count() == FAILED_ONLY
    untouched_pks = [order.pk for order in groups["untouched"]]
    assert Order.objects.filter(pk__in=untouched_pks, status=OrderStatus.AWAITING_PAYMENT).count() == UNTOUCHED
    # One delivery per paid order: one audit row, exactly its own key, one payment booked, no refunds.
    delivered = Counter(AuditEntry.objects.filter(action="order.delivered").values_list("subject_id", flat=True))
    assert delivered == Counter({str(pk): 1 for pk in paid_pks})
    sold = Counter(CardKey.objects.filter(status=CardKeyStatus.SOLD).values_list("order_id", flat=True))
    assert sold == Counter(dict.fromkeys(paid_pks, 1))
    assert CardKey.objects.filter(status=CardKeyStatus.RESERVED).count() == UNTOUCHED
    assert CardKey.objects.filter(status=CardKeyStatus.AVAILABLE).count() == 10 + FAILED_ONLY
    booked = Counter(Transfer.objects.filter(code="payment").values_list("order_id", flat=True))
    assert booked == Counter(dict.fromkeys(paid_pks, 1))
    assert not Transfer.objects.exclude(code__in=["payment", "share", "fee"]).exists()
    assert ledger_problems() == []
    connection.close()
