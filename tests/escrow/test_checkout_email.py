"""Issue 7: an e-mail longer than the order can store is a clear 400 at checkout, not a 500."""

import pytest
from django.test import Client

from escrow.models import Order, Payment
from shop.models import CardKey, CardKeyStatus
from tests import factories

pytestmark = pytest.mark.django_db

# Valid by the e-mail syntax (and under the 320 characters Django's validator allows), but longer than
# the 254 the order's column holds.
LONG_EMAIL = "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com"
LONGEST_STORED = "a" * 60 + "@" + ".".join(["b" * 60] * 3) + "." + "c" * 6 + ".com"


def test_the_addresses_are_the_lengths_they_claim():
    assert len(LONG_EMAIL) == 308
    assert len(LONGEST_STORED) == 254


def _nothing_ordered(product):
    assert Order.objects.count() == 0
    assert Payment.objects.count() == 0
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 1


def test_api_checkout_with_a_too_long_email_is_400_bad_email():
    product = factories.product_create(stock=1)
    response = Client().post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": 1, "email": LONG_EMAIL},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_email"
    assert "254" in response.json()["detail"]
    _nothing_ordered(product)


def test_page_checkout_with_a_too_long_email_shows_the_error():
    product = factories.product_create(stock=1)
    response = Client().post(f"/products/{product.pk}/checkout/", {"email": LONG_EMAIL, "quantity": 1})
    assert response.status_code == 400
    assert "254" in response.text
    _nothing_ordered(product)


def test_an_email_of_exactly_254_characters_is_accepted():
    product = factories.product_create(stock=1)
    response = Client().post(
        "/api/v1/orders/",
        {"product": product.pk, "quantity": 1, "email": LONGEST_STORED},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert Order.objects.get().email == LONGEST_STORED
