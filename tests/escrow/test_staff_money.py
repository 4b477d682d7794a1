"""Staff money handling: amounts in major units, pay-outs confirmed with their full details and a payout
reference, and a fresh second factor before a payout account or an API token is added."""

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEntry
from accounts.services import backup_codes_issue_unchecked
from escrow import services, withdrawals
from escrow.models import Order, PayoutAccount, Refund, Transfer, Withdrawal, WithdrawalStatus
from shop import services as shop_services
from shop.models import MerchantApiToken, Product
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.RESERVE_PERCENT = 0
    settings.WITHDRAWAL_MINIMUM = 1000


def requested_withdrawal(run_on_commit, *, amount=5000):
    product = factories.product_create(stock=2, price=10000)
    with run_on_commit():
        order = factories.order_delivered(product=product)
    services.order_confirm_receipt(order=order, now=timezone.now())
    merchant = product.merchant
    payout = factories.payout_account_create(merchant=merchant)
    device = factories.totp_device_create(user=merchant.user)
    return withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=payout.pk,
        amount=amount,
        currency="CNY",
        code=factories.totp_code(device),
        now=timezone.now(),
    )


def staff_client():
    staff = factories.user_create(is_staff=True, is_superuser=True)
    client = Client()
    factories.login_verified(client, staff)
    return client, staff


def test_the_admin_shows_major_units_and_the_currency(run_on_commit):
    withdrawal = requested_withdrawal(run_on_commit, amount=5000)
    client, _ = staff_client()

    listing = client.get("/admin/escrow/withdrawal/").content.decode()
    assert "¥50.00 CNY" in listing
    assert ">5000<" not in listing
    detail = client.get(f"/admin/escrow/withdrawal/{withdrawal.pk}/change/").content.decode()
    assert "¥50.00 CNY" in detail and ">5000<" not in detail
    orders = client.get("/admin/escrow/order/").content.decode()
    assert "¥100.00 CNY" in orders and ">10000<" not in orders
    products = client.get("/admin/shop/product/").content.decode()
    assert "¥100.00 CNY" in products


def test_product_price_is_edited_in_major_units_in_the_admin():
    product = factories.product_create(stock=0, price=10000)
    client, _ = staff_client()
    page = client.get(f"/admin/shop/product/{product.pk}/change/").content.decode()
    assert 'value="100.00"' in page
    form = {
        "merchant": product.merchant_id,
        "title": product.title,
        "description": "",
        "price": "12.34",
        "currency": "CNY",
        "category": "",
        "inspection_hours": 24,
        "max_per_order": 10,
        "low_stock_threshold": 10,
    }
    response = client.post(f"/admin/shop/product/{product.pk}/change/", form)
    assert response.status_code == 302
    assert Product.objects.get(pk=product.pk).price == 1234
    response = client.post(f"/admin/shop/product/{product.pk}/change/", {**form, "price": "1.234"})
    assert response.status_code == 200  # the form again, with the error
    assert Product.objects.get(pk=product.pk).price == 1234


def test_approving_a_withdrawal_shows_full_details_and_needs_a_payout_reference(run_on_commit):
    withdrawal = requested_withdrawal(run_on_commit, amount=5000)
    client, staff = staff_client()
    transfers = Transfer.objects.count()

    # The admin action does not pay at once: it opens the confirmation page.
    response = client.post("/admin/escrow/withdrawal/", {"action": "approve", "_selected_action": [withdrawal.pk]})
    assert response.status_code == 302
    assert response["Location"] == f"/staff/withdrawals/{withdrawal.pk}/approve/"
    withdrawal.refresh_from_db()
    assert withdrawal.status == WithdrawalStatus.REQUESTED and Transfer.objects.count() == transfers

    page = client.get(response["Location"]).content.decode()
    for detail in ("6222000011112222", "Li Lei", "ICBC", "¥50.00 CNY"):
        assert detail in page

    for incomplete in ({"confirm": "on"}, {"payout_reference": "ICBC-77"}, {"payout_reference": " ", "confirm": "on"}):
        refused = client.post(response["Location"], incomplete)
        assert refused.status_code == 400
    withdrawal.refresh_from_db()
    assert withdrawal.status == WithdrawalStatus.REQUESTED and Transfer.objects.count() == transfers

    done = client.post(response["Location"], {"payout_reference": "ICBC-20261130-77", "confirm": "on"})
    assert done.status_code == 302
    withdrawal.refresh_from_db()
    assert withdrawal.status == WithdrawalStatus.PAID
    assert withdrawal.payout_reference == "ICBC-20261130-77" and withdrawal.decided_by == staff
    entry = AuditEntry.objects.get(action="withdrawal.paid", subject_id=str(withdrawal.pk))
    assert entry.data["payout_reference"] == "ICBC-20261130-77" and entry.actor == staff

    again = client.post(response["Location"], {"payout_reference": "ICBC-again", "confirm": "on"})
    assert again.status_code == 400
    assert Withdrawal.objects.get(pk=withdrawal.pk).payout_reference == "ICBC-20261130-77"


def test_the_service_refuses_an_approval_without_a_payout_reference(run_on_commit):
    withdrawal = requested_withdrawal(run_on_commit)
    staff = factories.user_create(is_staff=True)
    with pytest.raises(withdrawals.WithdrawalRefused) as error:
        withdrawals.withdrawal_approve(
            withdrawal_pk=withdrawal.pk, staff=staff, payout_reference="  ", now=timezone.now()
        )
    assert error.value.code == "payout_reference_required"
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == WithdrawalStatus.REQUESTED


def test_the_full_account_number_is_for_staff_only(run_on_commit):
    withdrawal = requested_withdrawal(run_on_commit)
    merchant_client = Client()
    factories.login_verified(merchant_client, withdrawal.merchant.user)
    assert merchant_client.get(f"/staff/withdrawals/{withdrawal.pk}/approve/").status_code == 302  # to the login
    mine = merchant_client.get("/merchant/money/withdrawals/").content.decode()
    assert "6222000011112222" not in mine and "2222" in mine


def payout_form(code):
    return {
        "a-label": "Second",
        "a-provider": "CMB",
        "a-holder_name": "Han Meimei",
        "a-account_number": "6225888877776666",
        "a-code": code,
    }


def test_adding_a_payout_account_needs_a_fresh_second_factor():
    merchant = factories.merchant_create()
    client = Client()
    factories.login_verified(client, merchant.user)

    for code in ("", "000000"):
        client.post("/merchant/money/payout-accounts/", payout_form(code))
        assert not PayoutAccount.objects.filter(merchant=merchant).exists()
    with pytest.raises(withdrawals.WithdrawalRefused) as error:
        withdrawals.payout_account_add(
            merchant=merchant,
            label="x",
            holder_name="x",
            account_number="1",
            provider="x",
            code="123",
            actor=merchant.user,
            now=timezone.now(),
        )
    assert error.value.code == "bad_code"
    assert not PayoutAccount.objects.filter(merchant=merchant).exists()

    # The app's wrong codes throttle the app for a moment; a backup code is a fresh second factor too.
    [backup] = backup_codes_issue_unchecked(user=merchant.user, count=1, now=timezone.now())
    client.post("/merchant/money/payout-accounts/", payout_form(backup))
    assert PayoutAccount.objects.get(merchant=merchant).holder_name == "Han Meimei"
    assert AuditEntry.objects.filter(action="payout_account.added", actor=merchant.user).count() == 1


def test_creating_an_api_token_needs_a_fresh_second_factor():
    merchant = factories.merchant_create()
    client = Client()
    factories.login_verified(client, merchant.user)

    refused = client.post("/merchant/tokens/", {"name": "sync", "scopes": ["read"], "code": "000000"})
    assert refused.status_code == 400
    assert not MerchantApiToken.objects.filter(merchant=merchant).exists()
    with pytest.raises(shop_services.ShopError) as error:
        shop_services.merchant_api_token_create(
            merchant=merchant, name="x", actor=merchant.user, code="", now=timezone.now()
        )
    assert error.value.code == "bad_code"

    [backup] = backup_codes_issue_unchecked(user=merchant.user, count=1, now=timezone.now())
    created = client.post("/merchant/tokens/", {"name": "sync", "scopes": ["read"], "code": backup})
    assert created.status_code == 200
    token = MerchantApiToken.objects.get(merchant=merchant)
    assert token.name == "sync" and token.prefix in created.content.decode()


def test_the_admin_refund_action_opens_the_refund_page_for_one_order(run_on_commit):
    product = factories.product_create(stock=3)
    with run_on_commit():
        first = factories.order_delivered(product=product)
        second = factories.order_delivered(product=product)
    client, _ = staff_client()

    response = client.post("/admin/escrow/order/", {"action": "refund_order", "_selected_action": [first.pk]})
    assert response.status_code == 302 and response["Location"] == f"/staff/orders/{first.pk}/refund/"
    both = client.post(
        "/admin/escrow/order/", {"action": "refund_order", "_selected_action": [first.pk, second.pk]}, follow=True
    )
    assert "Choose exactly one order to refund." in both.content.decode()
    assert not Refund.objects.exists()
    assert set(Order.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)) == {"delivered"}
