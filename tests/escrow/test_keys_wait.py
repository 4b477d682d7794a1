"""A request for a paid order's keys waits for the worker's delivery in flight (escrow/key_reveal.py):
the buyer's first poll gets the keys instead of a 409 (issue 9)."""

import threading
import time

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from escrow import delivery, key_reveal, tasks
from escrow.models import KeyReveal, Order, OrderStatus
from tests import factories
from tests.conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def paid_not_delivered(monkeypatch):
    """A paid order whose delivery task is queued (recorded here) but not run yet, and its token."""
    queued = []
    monkeypatch.setattr(tasks.order_deliver_task, "apply_async", lambda kwargs, **options: queued.append(kwargs))
    product = factories.product_create(stock=3)
    placed = factories.order_place(product=product)
    assert factories.pay(placed.order).status_code == 200
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.PAID
    assert queued == [{"order_pk": placed.order.pk}]
    return placed.order, placed.access_token, queued[0]


def _keys(order, token):
    started = time.monotonic()
    response = Client().get(f"/api/v1/orders/{order.pk}/keys/", headers={"X-Order-Token": token})
    return response, time.monotonic() - started


def test_the_first_poll_gets_the_keys_delivered_while_it_waits(paid_not_delivered, settings):
    settings.ORDER_KEYS_WAIT_SECONDS = 5
    order, token, task = paid_not_delivered

    def worker() -> None:
        time.sleep(0.2)
        tasks.order_deliver_task.apply(kwargs=task, throw=True)

    delivering = threading.Thread(target=worker)
    delivering.start()
    response, took = _keys(order, token)
    delivering.join(timeout=30)
    assert response.status_code == 200, response.content
    assert len(response.json()["keys"]) == 1
    assert 0.15 < took < 4  # it waited for the delivery, not for the whole allowance
    assert KeyReveal.objects.filter(order=order).count() == 1


def test_the_wait_is_bounded_when_no_delivery_comes(paid_not_delivered, settings):
    settings.ORDER_KEYS_WAIT_SECONDS = 0.3
    order, token, _task = paid_not_delivered
    response, took = _keys(order, token)
    assert response.status_code == 409
    assert 0.3 <= took < 3
    assert not KeyReveal.objects.exists()


def test_an_unpaid_order_and_a_full_set_of_waiters_answer_at_once(paid_not_delivered, settings):
    settings.ORDER_KEYS_WAIT_SECONDS = 5
    unpaid = factories.order_place(product=factories.product_create(stock=1), email="later@example.com")
    response, took = _keys(unpaid.order, unpaid.access_token)
    assert response.status_code == 409 and took < 2  # no payment may ever come: nothing to wait for
    settings.ORDER_KEYS_WAITERS = 0
    order, token, _task = paid_not_delivered
    response, took = _keys(order, token)
    assert response.status_code == 409 and took < 2


def test_with_redis_the_delivery_wakes_the_waiting_request(paid_not_delivered, redis_cache, settings, monkeypatch):
    # Looking again only every 3 s (Redis's socket timeout is 5 s): woken sooner, by the announcement.
    settings.ORDER_KEYS_WAIT_SECONDS = 30
    monkeypatch.setattr(key_reveal, "LOOK_AGAIN_SECONDS", 3)
    woken = []

    def wait(**kwargs):
        woken.append(delivery.order_delivered_wait(**kwargs))
        return woken[-1]

    monkeypatch.setattr(key_reveal, "order_delivered_wait", wait)
    order, token, task = paid_not_delivered
    delivery.order_delivered_announce(order_pk=order.pk + 1000)  # deliveries are flowing (another order's)

    def worker() -> None:
        deadline = time.monotonic() + 20
        while not any(client["cmd"] == "blpop" for client in redis_cache.client_list()):
            assert time.monotonic() < deadline, "the request never waited"
            time.sleep(0.01)
        tasks.order_deliver_task.apply(kwargs=task, throw=True)

    delivering = threading.Thread(target=worker)
    delivering.start()
    with CaptureQueriesContext(connection) as captured:
        response, took = _keys(order, token)
    delivering.join(timeout=30)
    assert response.status_code == 200, response.content
    assert len(response.json()["keys"]) == 1
    assert woken == [True]  # one wait, ended by the delivery's announcement
    assert took < 20
    # The view's status read, one more when woken, the reveal: no polling of the database meanwhile.
    assert len(captured) == 3, [query["sql"][:80] for query in captured]


def test_an_announcement_nobody_takes_expires(redis_cache):
    delivery.order_delivered_announce(order_pk=123)
    (key,) = redis_cache.keys("*order:123:delivered*")
    assert 0 < redis_cache.ttl(key) <= delivery.ANNOUNCED_FOR_SECONDS
    assert delivery.order_delivered_wait(order_pk=123, seconds=1) is True
    assert delivery.order_delivered_wait(order_pk=123, seconds=0.05) is False


def test_with_redis_nothing_waits_once_deliveries_stop(paid_not_delivered, redis_cache, settings):
    # No delivery announced for DELIVERING_SECONDS (the workers stopped): the request answers at once,
    # so stopped workers hold no web process; while deliveries flow, it waits.
    settings.ORDER_KEYS_WAIT_SECONDS = 30
    order, token, _task = paid_not_delivered
    assert not delivery.deliveries_flowing()
    response, took = _keys(order, token)
    assert response.status_code == 409 and took < 10
    settings.ORDER_KEYS_WAIT_SECONDS = 0.3
    delivery.order_delivered_announce(order_pk=order.pk + 1000)  # another order's delivery
    assert delivery.deliveries_flowing()
    assert 0 < redis_cache.ttl(next(iter(redis_cache.keys("*deliveries:recent*")))) <= delivery.DELIVERING_SECONDS
    response, took = _keys(order, token)
    assert response.status_code == 409 and took >= 0.3  # it waited its allowance
