"""Products awaiting staff review: new products in a sensitive category, or of a merchant whose dispute
rate made risk raise their reserve, are neither listed nor purchasable until staff approve them."""

import pytest
from django.test import Client
from django.utils import timezone

import risk
from accounts.models import AuditEntry
from core.transitions import StateError
from escrow.models import Order
from escrow.services import CheckoutError
from shop import services
from shop.models import Category, Product, ProductStatus
from shop.selectors import catalog_products, products_on_sale
from tests import factories
from tests.risk.conftest import default_rules  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def sensitive():
    return Category.objects.create(slug="adult-games", name="Adult games", is_sensitive=True)


@pytest.fixture
def staff():
    return factories.user_create(is_staff=True)


@pytest.fixture
def staff_client(staff):
    client = Client()
    factories.login_verified(client, staff)
    return client


def on_sale(product) -> bool:
    return products_on_sale().filter(pk=product.pk).exists()


def assert_not_for_sale(client, product):
    assert not on_sale(product)
    assert not catalog_products().filter(pk=product.pk).exists()
    assert product.title not in client.get("/").content.decode()
    assert client.get(f"/products/{product.pk}/").status_code == 404
    assert client.get(f"/api/v1/products/{product.pk}/").status_code == 404
    assert product.pk not in [row["id"] for row in client.get("/api/v1/products/").json()["results"]]
    with pytest.raises(CheckoutError):
        factories.order_place(product=product)
    assert not Order.objects.filter(product=product).exists()


def test_a_product_in_a_sensitive_category_is_not_on_sale_until_staff_approve_it(client, sensitive, staff):
    product = factories.product_create(title="Sensitive card", category=sensitive, stock=3)
    ordinary = factories.product_create(merchant=product.merchant, title="Ordinary card")
    assert (product.status, product.review_reason) == (ProductStatus.AWAITING_REVIEW, "sensitive_category")
    assert product.review_requested_at is not None
    assert on_sale(ordinary)
    assert_not_for_sale(client, product)
    assert AuditEntry.objects.filter(action="product.review_requested", subject_id=str(product.pk)).exists()

    services.product_approve(product=product, actor=staff, now=timezone.now())
    product.refresh_from_db()
    assert product.status == ProductStatus.ACTIVE and product.reviewed_at is not None
    assert on_sale(product)
    assert client.get(f"/products/{product.pk}/").status_code == 200
    assert Order.objects.get(pk=factories.order_place(product=product).order.pk).status == "awaiting_payment"
    assert AuditEntry.objects.get(action="product.approved", subject_id=str(product.pk)).actor == staff
    with pytest.raises(StateError):  # a second approval is refused
        services.product_approve(product=product, actor=staff, now=timezone.now())


def test_a_rejected_product_stays_off_sale_says_why_and_may_ask_again(client, sensitive, staff):
    product = factories.product_create(category=sensitive)
    with pytest.raises(services.ShopError):
        services.product_reject(product=product, reason="  ", actor=staff, now=timezone.now())
    services.product_reject(product=product, reason="Not allowed here.", actor=staff, now=timezone.now())
    product.refresh_from_db()
    assert (product.status, product.review_note) == (ProductStatus.REJECTED, "Not allowed here.")
    assert_not_for_sale(client, product)

    merchant_client = Client()
    factories.login_verified(merchant_client, product.merchant.user)
    page = merchant_client.get("/merchant/products/").content.decode()
    assert "Not allowed here." in page
    # Neither resume nor the merchant's API puts it on sale: only staff do.
    merchant_client.post(f"/merchant/products/{product.pk}/resume/")
    product.refresh_from_db()
    assert product.status == ProductStatus.REJECTED
    merchant_client.post(f"/merchant/products/{product.pk}/review/")
    product.refresh_from_db()
    assert product.status == ProductStatus.AWAITING_REVIEW
    assert not on_sale(product)


def test_resuming_never_skips_a_review(sensitive):
    product = factories.product_create(category=sensitive)
    with pytest.raises(StateError):
        services.product_resume(product=product, actor=product.merchant.user, now=timezone.now())
    with pytest.raises(StateError):
        services.product_pause(product=product, actor=product.merchant.user, now=timezone.now())
    product.refresh_from_db()
    assert product.status == ProductStatus.AWAITING_REVIEW


def test_another_merchants_product_cannot_be_asked_for_review(sensitive, staff):
    product = factories.product_create(category=sensitive)
    services.product_reject(product=product, reason="No.", actor=staff, now=timezone.now())
    stranger = Client()
    factories.login_verified(stranger, factories.merchant_create(name="Stranger").user)
    assert stranger.post(f"/merchant/products/{product.pk}/review/").status_code == 404
    product.refresh_from_db()
    assert product.status == ProductStatus.REJECTED


def test_moving_a_listed_product_into_a_sensitive_category_takes_it_off_sale_for_review(sensitive):
    product = factories.product_create()
    assert on_sale(product)
    services.product_update(product=product, actor=product.merchant.user, now=timezone.now(), title="Renamed")
    assert on_sale(product)
    services.product_update(product=product, actor=product.merchant.user, now=timezone.now(), category=sensitive)
    product.refresh_from_db()
    assert (product.status, product.review_reason) == (ProductStatus.AWAITING_REVIEW, "sensitive_category")
    assert not on_sale(product)


def test_a_category_is_sensitive_only_when_staff_say_so():
    ordinary = Category.objects.create(slug="gift-cards", name="Gift cards")
    assert not ordinary.is_sensitive
    assert factories.product_create(category=ordinary).status == ProductStatus.ACTIVE


def test_new_products_of_a_merchant_whose_reserve_risk_raised_wait_for_review(client, default_rules):  # noqa: F811
    merchant = factories.merchant_create(name="Disputed Keys")
    before = factories.product_create(merchant=merchant, title="Listed before")
    check = risk.merchant_dispute_check(
        merchant_pk=merchant.pk, orders_30d=10, disputes_30d=4, used_disputes_30d=4, now=timezone.now()
    )
    assert check.flagged and risk.merchant_reserve_percent(merchant.pk) is not None
    after = factories.product_create(merchant=merchant, title="Listed after")
    assert (after.status, after.review_reason) == (ProductStatus.AWAITING_REVIEW, "merchant_reserve_raised")
    assert on_sale(before)  # what was already listed stays listed; the reserve covers it
    assert_not_for_sale(client, after)
    other = factories.product_create(title="Someone else's")
    assert other.status == ProductStatus.ACTIVE


def test_the_staff_console_lists_products_awaiting_review_and_acts_on_them(staff_client, sensitive, client):
    first = factories.product_create(title="First sensitive", category=sensitive)
    second = factories.product_create(title="Second sensitive", category=sensitive)
    factories.product_create(title="Not sensitive")
    console = staff_client.get("/staff/").content.decode()
    assert 'data-testid="count-products">2<' in console
    page = staff_client.get("/staff/queues/products/", {"q": "second"}).content.decode()
    assert "Second sensitive" in page and "First sensitive" not in page
    assert "In a sensitive category" in page

    assert staff_client.post(f"/staff/products/{first.pk}/approve/").status_code == 302
    assert staff_client.post(f"/staff/products/{second.pk}/reject/", {"reason": ""}).status_code == 302
    second.refresh_from_db()
    assert second.status == ProductStatus.AWAITING_REVIEW  # a rejection needs a reason
    staff_client.post(f"/staff/products/{second.pk}/reject/", {"reason": "Not for this shop."})
    statuses = dict(Product.objects.filter(pk__in=[first.pk, second.pk]).values_list("pk", "status"))
    assert statuses == {first.pk: ProductStatus.ACTIVE, second.pk: ProductStatus.REJECTED}
    assert 'data-testid="count-products">0<' in staff_client.get("/staff/").content.decode()
    assert "First sensitive" in client.get("/").content.decode()
    # Only verified staff act: a merchant's session is sent away and nothing changes.
    third = factories.product_create(title="Third", category=sensitive)
    merchant_client = Client()
    factories.login_verified(merchant_client, third.merchant.user)
    assert merchant_client.post(f"/staff/products/{third.pk}/approve/").status_code == 302
    third.refresh_from_db()
    assert third.status == ProductStatus.AWAITING_REVIEW
