"""Checkout under real concurrency: SKIP LOCKED never sells one key twice and never deadlocks."""

import threading
from collections import Counter

import pytest
from django.db import connection
from django.utils import timezone

from escrow import services
from escrow.models import Order
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_in_threads(count: int, work) -> list:
    """Start `count` threads on a barrier so they really collide; each uses its own connection."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def runner(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except Exception as error:  # the test inspects what each thread met
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_fifty_buyers_for_ten_keys_get_exactly_ten_orders():
    product = factories.product_create(stock=12)
    first = factories.order_place(product=product, quantity=2).order  # 10 keys left

    results = run_in_threads(50, lambda i: factories.order_place(product=product, email=f"b{i}@example.com"))

    placed = [r for r in results if isinstance(r, services.PlacedOrder)]
    refused = [r for r in results if isinstance(r, services.CheckoutError)]
    assert len(placed) == 10
    assert len(refused) == 40 and {r.code for r in refused} == {"out_of_stock"}
    assert Order.objects.filter(product=product).count() == 11
    owners = Counter(CardKey.objects.filter(product=product).values_list("order_id", flat=True))
    assert owners.pop(first.pk) == 2
    assert set(owners) == {p.order.pk for p in placed}
    assert set(owners.values()) == {1}
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.RESERVED).count() == 12


def test_multi_key_checkouts_racing_never_share_a_key():
    product = factories.product_create(stock=30)
    results = run_in_threads(
        20, lambda i: factories.order_place(product=product, quantity=3, email=f"c{i}@example.com")
    )
    placed = [r for r in results if isinstance(r, services.PlacedOrder)]
    assert len(placed) == 10
    per_order = Counter(CardKey.objects.filter(product=product).values_list("order_id", flat=True))
    assert sorted(per_order.values()) == [3] * 10


def test_racing_checkouts_of_one_buyer_never_pass_the_reservation_cap(settings):
    """Twelve checkouts by one e-mail at once, each counting what is held before reserving: the per-
    identity lock makes them count one after the other, so exactly the cap gets through."""
    settings.RESERVATION_MAX_KEYS_PER_EMAIL = 3
    settings.RESERVATION_MAX_KEYS_PER_IP = 1000
    product = factories.product_create(stock=20)
    results = run_in_threads(
        12,
        lambda i: services.order_place(
            product_pk=product.pk,
            quantity=1,
            email="Same@Example.com",
            buyer=None,
            now=timezone.now(),
            ip="203.0.113.1",
        ),
    )
    placed = [r for r in results if isinstance(r, services.PlacedOrder)]
    refused = [r for r in results if isinstance(r, services.CheckoutError)]
    assert len(placed) == 3
    assert len(refused) == 9 and {r.code for r in refused} == {"reservation_limit"}
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.RESERVED).count() == 3


def _waiting_on_a_lock() -> int:
    """Backends of this database waiting on a lock (a row's, or an advisory lock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _wait_for(condition, seconds: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_multi_key_checkout_that_fails_late_does_not_leave_another_out_of_stock():
    """Keys are claimed SKIP LOCKED. A checkout of two keys that holds the last keys and then fails (its
    coupon was used up meanwhile) must not make a concurrent checkout of two keys answer "out of stock"
    while those keys come back: that one waits for the first, then takes them."""
    from django.db import connections

    from shop import services as shop_services

    product = factories.product_create(stock=3, max_per_order=5)
    coupon = shop_services.coupon_create(
        merchant=product.merchant,
        code="LAST",
        kind="percent",
        value=10,
        currency="",
        product=product,
        actor=None,
        now=timezone.now(),
        max_uses=1,
    )
    holder = connections.create_connection("default")  # takes the coupon's last use, commits later
    holder.set_autocommit(False)
    with holder.cursor() as cursor:
        cursor.execute("UPDATE shop_coupon SET uses = uses + 1 WHERE id = %s", [coupon.pk])
    results: dict[str, object] = {}

    def place(name: str, **fields) -> None:
        try:
            results[name] = services.order_place(product_pk=product.pk, buyer=None, now=timezone.now(), **fields)
        except Exception as error:  # the test reads what each met
            results[name] = error
        finally:
            connection.close()

    first = threading.Thread(
        target=place, args=("first",), kwargs={"quantity": 2, "email": "a@example.com", "coupon_code": "LAST"}
    )
    first.start()
    _wait_for(lambda: _waiting_on_a_lock() == 1)  # its keys claimed, its coupon's use waiting on the holder
    second = threading.Thread(target=place, args=("second",), kwargs={"quantity": 2, "email": "b@example.com"})
    second.start()
    _wait_for(lambda: "second" in results or _waiting_on_a_lock() == 2)
    holder.commit()
    holder.close()
    first.join(timeout=60)
    second.join(timeout=60)
    assert isinstance(results["first"], services.CheckoutError) and results["first"].code == "coupon_used_up"
    assert isinstance(results["second"], services.PlacedOrder), results["second"]
    assert CardKey.objects.filter(product=product, order=results["second"].order).count() == 2
