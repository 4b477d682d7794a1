"""A key reveal and a refund of the same order, at the same moment, on PostgreSQL.

The reveal is recorded and its keys read in one statement under the order's row lock
(escrow/reveals.py), and the refund decides under that lock whether the keys were ever seen. Whichever
takes the lock first, the other sees what it did: a reveal first is seen by the refund (the key is
revoked, never sold again); a refund first leaves the waiting reveal nothing to show (409, no reveal
recorded, the key back on sale). Each test holds the order's row in a third transaction, starts both
paths in the chosen order so that both wait on it, then lets it go.
"""

import threading

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from escrow import refunds
from escrow.locks import order_lock
from escrow.models import KeyDisposition, KeyReveal, OrderStatus
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres
from tests.locks import wait_until_blocked

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


def _race(order_pk: int, access_token: str, *, reveal_first: bool) -> tuple[int, object]:
    staff = factories.user_create(is_staff=True)
    results: dict[str, object] = {}

    def reveal() -> None:
        try:
            results["reveal"] = (
                Client().get(f"/api/v1/orders/{order_pk}/keys/", headers={"X-Order-Token": access_token}).status_code
            )
        finally:
            connection.close()

    def refund() -> None:
        try:
            results["refund"] = refunds.order_refund(
                order_pk=order_pk, now=timezone.now(), disposition=KeyDisposition.RESTOCK, actor=staff, reason="staff"
            )
        finally:
            connection.close()

    paths = [threading.Thread(target=reveal), threading.Thread(target=refund)]
    if not reveal_first:
        paths.reverse()
    with transaction.atomic():
        order_lock(order_pk)
        for waiters, thread in enumerate(paths, start=1):
            thread.start()
            wait_until_blocked(thread, waiters, what="the order's lock")
    for thread in paths:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in paths)
    return results["reveal"], results["refund"]


def _delivered():
    placed = factories.order_place(product=factories.product_create(stock=1))
    assert factories.pay(placed.order).status_code == 200  # eager delivery, committed
    placed.order.refresh_from_db()
    assert placed.order.status == OrderStatus.DELIVERED
    return placed


def test_a_reveal_that_takes_the_lock_first_is_seen_by_the_refund():
    placed = _delivered()
    status, refund = _race(placed.order.pk, placed.access_token, reveal_first=True)
    assert status == 200
    assert KeyReveal.objects.filter(order_id=placed.order.pk).count() == 1
    assert CardKey.objects.get(order_id=placed.order.pk).status == CardKeyStatus.REVOKED
    assert list(refund.revoked_keys.values()) == ["revealed"]


def test_a_reveal_waiting_behind_a_refund_shows_nothing_and_records_nothing():
    placed = _delivered()
    key = CardKey.objects.get(order_id=placed.order.pk)
    status, refund = _race(placed.order.pk, placed.access_token, reveal_first=False)
    assert status == 409
    assert not KeyReveal.objects.filter(order_id=placed.order.pk).exists()
    key.refresh_from_db()
    assert (key.status, key.order_id) == (CardKeyStatus.AVAILABLE, None)  # nobody saw it: back on sale
    assert refund.revoked_keys == {}
