"""A refunded key goes back on sale only if nobody could have it: never revealed, never exported."""

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEntry
from escrow import refunds, services
from escrow.ledger_checks import ledger_problems
from escrow.models import KeyDisposition, KeyReveal, OrderStatus
from shop import services as shop_services
from shop.models import CardKey, CardKeyStatus
from tests import factories

pytestmark = pytest.mark.django_db


def bought(run_on_commit, *, stock=1, quantity=1):
    product = factories.product_create(stock=stock)
    placed = factories.order_place(product=product, quantity=quantity)
    with run_on_commit():
        factories.pay(placed.order)
    placed.order.refresh_from_db()
    assert placed.order.status == OrderStatus.DELIVERED
    return product, placed


def reveal_by_api(placed) -> list[str]:
    response = Client().get(f"/api/v1/orders/{placed.order.pk}/keys/", headers={"X-Order-Token": placed.access_token})
    assert response.status_code == 200, response.content
    return response.json()["keys"]


def refund_restock(order, run_on_commit):
    staff = factories.user_create(is_staff=True)
    with run_on_commit():
        return refunds.order_refund(
            order_pk=order.pk, now=timezone.now(), disposition=KeyDisposition.RESTOCK, actor=staff, reason="staff"
        )


def test_a_revealed_key_is_revoked_even_when_return_to_stock_is_asked(run_on_commit):
    product, placed = bought(run_on_commit)
    [key_text] = reveal_by_api(placed)
    key = CardKey.objects.get(order=placed.order)

    refund = refund_restock(placed.order, run_on_commit)

    key.refresh_from_db()
    assert key.status == CardKeyStatus.REVOKED
    assert refund.revoked_keys == {str(key.pk): "revealed"}
    entry = AuditEntry.objects.get(action="order.refunded", subject_id=str(placed.order.pk))
    assert entry.data["revoked"] == {str(key.pk): "revealed"} and entry.data["restocked"] == []
    # The next buyer can never get it: the product's only key is gone for good.
    with pytest.raises(services.CheckoutError) as error:
        factories.order_place(product=product, email="second@example.com")
    assert error.value.code == "out_of_stock"
    assert ledger_problems() == []
    assert key_text  # the first buyer saw a real key


def test_any_reveal_of_the_order_counts_for_all_its_keys(run_on_commit):
    _, placed = bought(run_on_commit, stock=2, quantity=2)
    services.order_keys_reveal(
        order=placed.order, now=timezone.now(), channel="page", ip=None, user_agent="", user=None
    )
    keys = sorted(CardKey.objects.filter(order=placed.order).values_list("pk", flat=True))

    refund = refund_restock(placed.order, run_on_commit)

    assert set(CardKey.objects.filter(pk__in=keys).values_list("status", flat=True)) == {CardKeyStatus.REVOKED}
    assert refund.revoked_keys == {str(pk): "revealed" for pk in keys}


def test_a_never_revealed_key_goes_back_on_sale_and_the_next_buyer_gets_it(run_on_commit):
    product, placed = bought(run_on_commit)
    key = CardKey.objects.get(order=placed.order)

    refund = refund_restock(placed.order, run_on_commit)

    key.refresh_from_db()
    assert key.status == CardKeyStatus.AVAILABLE and key.order_id is None
    assert refund.revoked_keys == {}
    second = factories.order_place(product=product, email="second@example.com")
    assert CardKey.objects.get(order=second.order).pk == key.pk
    assert KeyReveal.objects.count() == 0


def test_a_key_that_was_in_a_merchant_export_is_revoked(run_on_commit):
    product = factories.product_create(stock=1)
    shop_services.keys_export_record(product=product, actor=product.merchant.user, now=timezone.now())
    placed = factories.order_place(product=product)
    with run_on_commit():
        factories.pay(placed.order)
    key = CardKey.objects.get(order=placed.order)

    refund = refund_restock(placed.order, run_on_commit)

    key.refresh_from_db()
    assert key.status == CardKeyStatus.REVOKED
    assert refund.revoked_keys == {str(key.pk): "exported"}


def test_reserved_keys_of_an_undelivered_order_go_back_on_sale(django_capture_on_commit_callbacks):
    product = factories.product_create(stock=1)
    placed = factories.order_place(product=product)
    with django_capture_on_commit_callbacks(execute=False):  # paid, but delivery has not run
        factories.pay(placed.order)
    key = CardKey.objects.get(order=placed.order)
    assert key.status == CardKeyStatus.RESERVED

    refund = refunds.order_refund(order_pk=placed.order.pk, now=timezone.now(), disposition=KeyDisposition.RESTOCK)

    key.refresh_from_db()
    assert key.status == CardKeyStatus.AVAILABLE and refund.revoked_keys == {}
    assert ledger_problems() == []


def test_the_refund_page_says_which_keys_will_be_revoked_before_confirming(run_on_commit):
    _, placed = bought(run_on_commit, stock=2, quantity=1)
    reveal_by_api(placed)
    key = CardKey.objects.get(order=placed.order)
    merchant_user = placed.order.merchant.user
    client = Client()
    factories.login_verified(client, merchant_user)

    page = client.get(f"/merchant/money/orders/{placed.order.pk}/refund/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "will be revoked" in text and f"#{key.pk}" in text
    assert "seen" in text  # why: the buyer has seen it
    key.refresh_from_db()
    assert key.status == CardKeyStatus.SOLD  # showing the page changed nothing
