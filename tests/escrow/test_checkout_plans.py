"""The purchase's statements get the plans they were written for: the partial indexes in PostgreSQL's
generic plans, the generic plan kept once the tables are analysed, and never a walk of the key table's
primary key.

A prepared statement runs its first five times on custom plans (made for its values) and then, when it
looks no dearer, on one generic plan made without them. A partial index (`WHERE status = 'available'`)
is usable there only if the statement states that condition itself: with the status a parameter, the
generic plan of the key claim walked the primary key through every other product's keys, and the
reservation caps' sums read the whole order table (10 to 20 ms a checkout on a table of 35,000 orders,
against 0.05 ms). Here every plan is generic (`plan_cache_mode`), on tables big enough that a scan would
cost more than the index, and each statement's plan must use its partial index.
"""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from escrow.models import Order, OrderStatus
from tests import factories
from tests.conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


def _checkout(product, email: str = "buyer@example.com", address: str = "203.0.113.5"):
    """A guest's checkout of one key through the API, answered 201."""
    response = Client(REMOTE_ADDR=address).post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": 1, "email": email},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response


def _plan(execute_sql: str) -> dict:
    """The top node of the plan of an `EXECUTE name (…)`, as the session's `plan_cache_mode` makes it."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {execute_sql}")
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Plan"]


def _plan_indexes(execute_sql: str) -> list[tuple[str, str]]:
    """(node type, index or relation) of every scan in the plan of an `EXECUTE name (…)`."""
    found = []

    def walk(node):
        if "Scan" in node["Node Type"]:
            found.append((node["Node Type"], node.get("Index Name") or node.get("Relation Name", "")))
        for child in node.get("Plans", []):
            walk(child)

    walk(_plan(execute_sql))
    return found


def test_the_checkouts_generic_plans_use_the_partial_indexes_of_the_key_claim_and_the_caps():
    # A shop's stock: many products, their keys with lower ids than the product's.
    shelf = [factories.product_create(stock=100, price=100) for _ in range(30)]
    earlier = shelf[0]
    product = factories.product_create(stock=20, price=100)
    merchant = product.merchant
    now = timezone.now()
    Order.objects.bulk_create(
        [
            Order(
                product=earlier,
                merchant=earlier.merchant,
                email=f"other{number}@example.com",
                quantity=1,
                unit_price=100,
                amount=100,
                currency=earlier.currency,
                status=OrderStatus.DELIVERED if number % 2 else OrderStatus.AWAITING_PAYMENT,
                checkout_ip=f"198.51.{number // 250}.{number % 250}",
                access_token_hash=f"{number:064x}",
                created_at=now,
                expires_at=now + timedelta(minutes=15),
            )
            for number in range(3000)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE shop_cardkey")
        cursor.execute("ANALYZE escrow_order")
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    try:
        with CaptureQueriesContext(connection) as captured:
            _checkout(product)
        write = [query["sql"] for query in captured.captured_queries if "escrow_order" in query["sql"]]
        executes = [sql for sql in (query["sql"] for query in captured.captured_queries) if sql.startswith("EXECUTE")]
        assert executes, [query["sql"][:80] for query in captured.captured_queries]
        scans = [scan for sql in executes for scan in _plan_indexes(sql)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET plan_cache_mode")
    assert write
    used = {name for _node, name in scans}
    assert "card_key_available_idx" in used, scans
    assert {"escrow_order_unpaid_email", "escrow_order_unpaid_ip"} <= used, scans
    assert ("Seq Scan", "escrow_order") not in scans and ("Seq Scan", "shop_cardkey") not in scans, scans
    assert Order.objects.filter(product=product, merchant=merchant).count() == 1


def test_the_deliverys_generic_plan_counts_the_available_keys_in_their_partial_index(monkeypatch):
    """The delivery counts the product's available keys up to its low-stock threshold in the statement
    that marks the order delivered; with their status a parameter, its generic plan walked past every
    key the product had ever sold (keys are sold in key order), so each delivery cost more than the last."""
    from escrow import services, tasks
    from shop.models import CardKey, CardKeyStatus

    monkeypatch.setattr(tasks.order_deliver_task, "apply_async", lambda kwargs, **options: None)
    shelf = [factories.product_create(stock=100, price=100) for _ in range(20)]
    product = factories.product_create(stock=2000, price=100)
    sold = CardKey.objects.filter(product=product).order_by("pk").values_list("pk", flat=True)[:1900]
    CardKey.objects.filter(pk__in=list(sold)).update(status=CardKeyStatus.SOLD)
    placed = factories.order_place(product=product)
    assert factories.pay(placed.order).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE shop_cardkey")
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    try:
        with CaptureQueriesContext(connection) as captured:
            services.order_deliver(order_pk=placed.order.pk, now=timezone.now())
        executes = [query["sql"] for query in captured.captured_queries if query["sql"].startswith("EXECUTE")]
        scans = [scan for sql in executes for scan in _plan_indexes(sql)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET plan_cache_mode")
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.DELIVERED
    assert len(shelf) == 20
    card_key_scans = [(node, name) for node, name in scans if "cardkey" in name or "card_key" in name]
    assert ("Index Only Scan", "card_key_available_idx") in card_key_scans or (
        "Index Scan",
        "card_key_available_idx",
    ) in card_key_scans, scans
    # Only the keys' own lookups besides: the sale by order (its index), never the product's keys at large.
    assert not [scan for scan in card_key_scans if "product_id" in scan[1] or scan[1] == "shop_cardkey"], scans


def test_a_purchases_prepared_statements_keep_their_generic_plan_once_the_tables_are_analysed(monkeypatch):
    """PostgreSQL keeps a prepared statement's generic plan only while that plan's estimate is no dearer
    than planning the statement afresh; otherwise it plans every execution anew. The checkout's write
    passed the claim's LIMIT as a parameter, which a generic plan estimates at a tenth of the product's
    keys: once ANALYZE had given the tables real statistics (autovacuum does, in production), its
    generic plan looked dearer and every checkout paid for planning its seven-part statement (~0.2 ms
    of the server's CPU, a quarter of what it spends on a checkout; more with the risk engine's parts).
    Here a shop's tables are analysed, then a dozen purchases run on one session (checkout, webhook,
    delivery, key reveal), and no statement of theirs may have been planned afresh after its fifth run."""
    from importlib import import_module

    from django.apps import apps

    from escrow import services, tasks
    from risk.models import Rule

    Rule.objects.all().delete()  # the shipped rules, whatever an earlier transactional test flushed
    import_module("risk.migrations.0002_default_rules").rules_add(apps, None)
    queued = []
    monkeypatch.setattr(tasks.order_deliver_task, "apply_async", lambda kwargs, **options: queued.append(kwargs))
    monkeypatch.setattr(services, "order_delivered_notify", lambda **kwargs: None)
    monkeypatch.setattr(tasks.order_email_task, "delay", lambda **kwargs: None)
    monkeypatch.setattr(tasks.order_link_email_task, "delay", lambda **kwargs: None)
    shelf = [factories.product_create(stock=100, price=100) for _ in range(10)]
    product = factories.product_create(stock=3000, price=1234)
    api = Client()

    def purchase(number: int) -> None:
        created = _checkout(product, f"buyer{number}@example.com", f"10.{number // 250}.{number % 250}.7")
        order = Order.objects.get(pk=created.json()["id"])
        assert factories.pay(order).status_code == 200
        tasks.order_deliver_task.apply(kwargs=queued.pop(), throw=True)
        token = {"X-Order-Token": created.json()["access_token"]}
        keys = api.get(f"/api/v1/orders/{order.pk}/keys/", headers=token)
        assert keys.status_code == 200 and len(keys.json()["keys"]) == 1

    for number in range(30):  # tables with orders, payments, decisions in them
        purchase(number)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("DEALLOCATE ALL")  # counted afresh from here
        connection._prepared_statements = None
    for number in range(30, 42):
        purchase(number)
    with connection.cursor() as cursor:
        cursor.execute("SELECT generic_plans, custom_plans, statement FROM pg_prepared_statements")
        statements = cursor.fetchall()
    ran = [(generic, custom, text) for generic, custom, text in statements if generic + custom >= 12]
    assert ran, statements
    replanned = [(custom, text[:160]) for generic, custom, text in ran if custom > 5]
    assert not replanned, replanned
    assert len(shelf) == 10


@pytest.mark.parametrize("plans", ["force_generic_plan", "force_custom_plan"])
def test_in_a_shop_of_few_products_the_claim_and_the_count_read_the_partial_index(plans, monkeypatch):
    """A product's keys follow each other in the primary key. Claimed as `product_id = x ORDER BY id`,
    the primary key gives that order too, and PostgreSQL reckons the product's first key lies a few
    rows in, as if every product's keys were spread evenly: in a shop of two products it walked the
    primary key, and every claim (and low-stock count) of the product uploaded second stepped over all
    of the first one's keys: 12 ms of the server's CPU a checkout with 40,000 keys each, custom plan or
    generic. The keys are now taken in an order only the partial index gives (`id + 0`)."""
    from escrow import services, tasks

    monkeypatch.setattr(tasks.order_deliver_task, "apply_async", lambda kwargs, **options: None)
    first = factories.product_create(stock=4000, price=100)
    product = factories.product_create(stock=4000, price=100, merchant=first.merchant)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE shop_cardkey")
        cursor.execute(f"SET plan_cache_mode = {plans}")
    try:
        with CaptureQueriesContext(connection) as captured:
            response = _checkout(product)
            order = Order.objects.get(pk=response.json()["id"])
            assert factories.pay(order).status_code == 200
            services.order_deliver(order_pk=order.pk, now=timezone.now())
        executes = [query["sql"] for query in captured.captured_queries if query["sql"].startswith("EXECUTE")]
        scans = [scan for sql in executes for scan in _plan_indexes(sql)]
        walks = [sql[:40] for sql in executes if _walks_primary_key(sql)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET plan_cache_mode")
    assert Order.objects.get(pk=order.pk).status == OrderStatus.DELIVERED
    assert first.pk < product.pk
    available = [scan for scan in scans if scan[1] == "card_key_available_idx"]
    assert len(available) >= 2, scans  # the claim and the delivery's count
    assert not [scan for scan in scans if scan == ("Seq Scan", "shop_cardkey")], scans
    # The primary key only to find the picked key again (the claim's UPDATE), never walked.
    assert not walks, scans


def _walks_primary_key(execute_sql: str) -> bool:
    """Whether the plan reads the key table's primary key without an index condition (a walk)."""

    def walks(node) -> bool:
        if node.get("Index Name") == "shop_cardkey_pkey" and "Index Cond" not in node:
            return True
        return any(walks(child) for child in node.get("Plans", []))

    return walks(_plan(execute_sql))
