"""Domain writes from the admin go through the services and the audit trail; audit actions are an enum."""

from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditAction, AuditEntry, User
from accounts.services import audit_record, audit_record_many
from shop import services
from shop.models import Merchant, Product
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(admin_user):
    """pytest-django's admin client, with the second factor the admin asks for."""
    client = Client()
    factories.login_verified(client, admin_user)
    return client


def product_form(product: Product, **changes) -> dict:
    return {
        "title": product.title,
        "description": product.description,
        "price": "100.00",
        "currency": product.currency,
        "category": product.category_id or "",
        "inspection_hours": product.inspection_hours,
        "max_per_order": product.max_per_order,
        "low_stock_threshold": product.low_stock_threshold,
        **changes,
    }


def test_a_price_changed_in_the_admin_is_audited_with_old_and_new(admin_client):
    product = factories.product_create(price=10000, stock=1)
    response = admin_client.post(f"/admin/shop/product/{product.pk}/change/", product_form(product, price="123.45"))
    assert response.status_code == 302, response.content.decode()[:2000]
    product.refresh_from_db()
    assert product.price == 12345
    entry = AuditEntry.objects.get(action=AuditAction.PRODUCT_UPDATED, subject_id=str(product.pk))
    assert entry.actor == User.objects.get(username="admin")
    assert entry.data == {"fields": ["price"], "old": {"price": 10000}, "new": {"price": 12345}}


def test_a_product_saved_unchanged_in_the_admin_writes_nothing_new(admin_client):
    product = factories.product_create(price=10000, stock=1)
    response = admin_client.post(f"/admin/shop/product/{product.pk}/change/", product_form(product))
    assert response.status_code == 302
    assert not AuditEntry.objects.filter(action=AuditAction.PRODUCT_UPDATED).exists()
    assert Product.objects.get(pk=product.pk).price == 10000


def test_a_merchants_fee_changed_in_the_admin_is_audited_with_old_and_new(admin_client):
    merchant = factories.merchant_create(name="Fee Shop", fee_percent=Decimal("5.00"))
    response = admin_client.post(
        f"/admin/shop/merchant/{merchant.pk}/change/",
        # An unchecked box is left out of a form post: the notifications setting is sent as it stands.
        {"name": merchant.name, "contact": merchant.contact, "fee_percent": "7.25", "notify_paid_orders": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    merchant.refresh_from_db()
    assert merchant.fee_percent == Decimal("7.25")
    entry = AuditEntry.objects.get(action=AuditAction.MERCHANT_UPDATED, subject_id=str(merchant.pk))
    assert entry.actor == User.objects.get(username="admin")
    assert entry.data == {"fields": ["fee_percent"], "old": {"fee_percent": "5.00"}, "new": {"fee_percent": "7.25"}}


def test_a_merchant_added_in_the_admin_gets_its_data_key_and_fee(admin_client):
    user = factories.user_create()
    response = admin_client.post(
        "/admin/shop/merchant/add/", {"user": user.pk, "name": "Admin Made", "fee_percent": "3"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    merchant = Merchant.objects.get(user=user)
    assert merchant.data_key_wrapped and merchant.data_key_version
    assert merchant.fee_percent == Decimal("3")
    assert AuditEntry.objects.filter(subject_id=str(merchant.pk), action=AuditAction.MERCHANT_CREATED).count() == 1


def test_merchant_update_refuses_a_fee_out_of_range_and_changes_nothing():
    merchant = factories.merchant_create(fee_percent=Decimal("5.00"))
    with pytest.raises(services.ShopError) as refused:
        services.merchant_update(merchant=merchant, actor=None, now=timezone.now(), fee_percent=Decimal("101"))
    assert refused.value.code == "bad_fee"
    assert Merchant.objects.get(pk=merchant.pk).fee_percent == Decimal("5.00")
    assert not AuditEntry.objects.filter(action=AuditAction.MERCHANT_UPDATED).exists()


def test_audit_record_refuses_an_action_not_in_the_enum_and_writes_nothing():
    user = factories.user_create()
    with pytest.raises(ValueError, match="not an audit action"):
        audit_record(action="order.teleported", subject=user, now=timezone.now())
    with pytest.raises(ValueError, match="not an audit action"):
        audit_record_many(
            entries=[AuditEntry(at=timezone.now(), action="order.teleported", subject_type="x", subject_id="1")]
        )
    assert AuditEntry.objects.count() == 0
    # The enum keeps the strings stored before it existed.
    assert audit_record(action="order.placed", subject=user, now=timezone.now()).action == AuditAction.ORDER_PLACED
