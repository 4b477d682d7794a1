"""The merchant money pages, the staff refund page, the transparency page and the proof commands."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import services as accounts_services
from accounts.models import AuditEntry, AuthenticatorDevice, BackupCodeDevice
from escrow import liabilities, services, withdrawals
from escrow.models import LiabilityLeaf, OrderStatus, Refund, Withdrawal
from shop.models import CardKey
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_reserve(settings):
    settings.RESERVE_PERCENT = 0


def sold(run_on_commit, *, quantity=1, merchant=None):
    product = factories.product_create(stock=3, merchant=merchant)
    with run_on_commit():
        order = factories.order_delivered(product=product, quantity=quantity)
    return order


def test_balance_page_and_csv_statement(client, run_on_commit):
    order = sold(run_on_commit)
    services.order_confirm_receipt(order=order, now=timezone.now())
    factories.login_verified(client, order.merchant.user)
    page = client.get("/merchant/money/")
    assert page.status_code == 200
    assert "¥95.00 CNY" in page.content.decode()
    csv_text = client.get("/merchant/money/?format=csv").content.decode()
    assert f"order:{order.pk}:share:post" in csv_text and ",95.00,CNY," in csv_text
    assert f"order:{order.pk}:fee" not in csv_text  # the platform's fee account is not theirs
    empty = client.get("/merchant/money/?since=2000-01-01&until=2000-01-02&format=csv").content.decode()
    assert empty.count("\n") == 1


def test_withdrawal_page_without_device_links_to_enrolment(client, run_on_commit):
    order = sold(run_on_commit)
    services.order_confirm_receipt(order=order, now=timezone.now())
    merchant = order.merchant
    device = factories.login_verified(client, merchant.user)
    client.post(
        "/merchant/money/payout-accounts/",
        {
            "a-label": "Main",
            "a-provider": "ICBC",
            "a-holder_name": "Li",
            "a-account_number": "62220000",
            "a-code": factories.totp_code(device),
        },
    )
    payout = merchant.payout_accounts.get()
    # The app is gone but a backup code let them in: a withdrawal still needs the app.
    AuthenticatorDevice.objects.filter(user=merchant.user).delete()
    accounts_services.backup_codes_issue_unchecked(user=merchant.user, count=1, now=timezone.now())
    factories.login_verified(client, merchant.user, device=BackupCodeDevice.objects.get(user=merchant.user))
    form = {"w-payout_account": payout.pk, "w-amount": "20.00", "w-currency": "CNY", "w-code": "123456"}
    response = client.post("/merchant/money/withdrawals/", form)
    assert response.status_code == 400
    assert "/account/security/" in response.content.decode()
    assert Withdrawal.objects.count() == 0

    # With no device at all, the merchant area itself sends them to enrol before reading the form.
    BackupCodeDevice.objects.filter(user=merchant.user).delete()
    response = client.post("/merchant/money/withdrawals/", form)
    assert response.status_code == 302
    assert response.url.startswith("/account/security/totp/")
    assert Withdrawal.objects.count() == 0


def test_merchant_refund_page_is_scoped_to_own_orders(client, run_on_commit):
    order = sold(run_on_commit, quantity=2)
    other = factories.merchant_create(name="Other")
    factories.login_verified(client, other.user)
    assert client.get(f"/merchant/money/orders/{order.pk}/refund/").status_code == 404
    factories.login_verified(client, order.merchant.user)
    key = CardKey.objects.filter(order=order).order_by("pk").first()
    with run_on_commit():
        response = client.post(
            f"/merchant/money/orders/{order.pk}/refund/", {"keys": [str(key.pk)], "disposition": "revoke"}
        )
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    assert Refund.objects.get(order=order).status == "succeeded"


def test_staff_refund_page_and_withdrawal_admin_actions(client, run_on_commit):
    order = sold(run_on_commit)
    staff = factories.user_create(is_staff=True, is_superuser=True)
    factories.login_verified(client, staff)
    # Staff must say why they refund: without a reason nothing happens.
    refused = client.post(f"/staff/orders/{order.pk}/refund/", {"disposition": "restock"})
    assert refused.status_code == 400 and "This field is required" in refused.content.decode()
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED and not Refund.objects.filter(order=order).exists()
    with run_on_commit():
        done = client.post(f"/staff/orders/{order.pk}/refund/", {"disposition": "restock", "note": "Key reported dead"})
        assert done.status_code == 302
    order.refresh_from_db()
    assert order.status == OrderStatus.REFUNDED
    assert Refund.objects.get(order=order).note == "Key reported dead"
    entry = AuditEntry.objects.get(action="order.refunded", subject_id=str(order.pk))
    assert entry.data["note"] == "Key reported dead" and entry.actor == staff

    paid = sold(run_on_commit)
    services.order_confirm_receipt(order=paid, now=timezone.now())
    merchant = paid.merchant
    payout = factories.payout_account_create(merchant=merchant)
    device = factories.totp_device_create(user=merchant.user)
    withdrawal = withdrawals.withdrawal_request(
        merchant=merchant,
        user=merchant.user,
        payout_account_pk=payout.pk,
        amount=5000,
        currency="CNY",
        code=factories.totp_code(device),
        now=timezone.now(),
    )
    response = client.post("/admin/escrow/withdrawal/", {"action": "approve", "_selected_action": [withdrawal.pk]})
    assert response.status_code == 302
    response = client.post(response["Location"], {"payout_reference": "ICBC-1", "confirm": "on"})
    assert response.status_code == 302
    withdrawal.refresh_from_db()
    assert withdrawal.status == "paid"


def test_published_proof_downloads_and_verifies(client, run_on_commit, tmp_path, capsys):
    first = sold(run_on_commit)
    sold(run_on_commit)
    call_command("publish_liabilities")
    leaf = LiabilityLeaf.objects.filter(merchant=first.merchant).first()
    factories.login_verified(client, first.merchant.user)
    page = client.get("/merchant/money/")
    assert f"/merchant/money/proofs/{leaf.pk}/" in page.content.decode()
    proof = client.get(f"/merchant/money/proofs/{leaf.pk}/").json()
    assert proof["amount"] == 9500 and len(proof["leaves"]) >= 2

    other = LiabilityLeaf.objects.exclude(merchant=first.merchant).first()
    factories.login_verified(client, other.merchant.user)
    assert client.get(f"/merchant/money/proofs/{leaf.pk}/").status_code == 404

    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    call_command("verify_liability_proof", str(path))
    proof["amount"] = 1
    path.write_text(json.dumps(proof))
    with pytest.raises(CommandError):
        call_command("verify_liability_proof", str(path))

    page = client.post("/transparency/", {"proof": SimpleUploadedFile("p.json", path.read_bytes())})
    assert 'data-proof-valid="false"' in page.content.decode()
    good = liabilities.proof_for(leaf=leaf)
    page = client.post("/transparency/", {"proof": SimpleUploadedFile("p.json", json.dumps(good).encode())})
    assert 'data-proof-valid="true"' in page.content.decode()
    assert leaf.publication.root_hash in page.content.decode()
