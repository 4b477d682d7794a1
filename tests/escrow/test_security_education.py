"""Short warnings where scams happen (the order page, withdrawals, payout accounts) and the tips page."""

from django.test import Client
from django.utils import translation

from escrow import services
from tests import factories


def test_the_order_page_warns_never_to_share_the_key(db):
    placed = factories.order_place(product=factories.product_create())
    page = Client().get(services.order_page_path(placed.order, placed.access_token)).content.decode()
    assert 'data-testid="key-warning"' in page
    assert "Never share your key with anyone who contacts you" in page
    assert "the shop never asks for it" in page
    assert 'href="/security/"' in page


def test_the_order_page_warns_in_chinese(db):
    placed = factories.order_place(product=factories.product_create())
    page = Client(headers={"accept-language": "zh-hans"}).get(
        services.order_page_path(placed.order, placed.access_token)
    )
    assert "切勿" in page.content.decode()


def test_withdrawal_and_payout_account_forms_carry_their_warnings(client, db):
    merchant = factories.merchant_create()
    device = factories.login_verified(client, merchant.user)
    page = client.get("/merchant/money/withdrawals/").content.decode()
    assert 'data-testid="payout-account-warning"' in page
    assert "Nobody from the shop will ever ask you to add or change a payout account" in page
    assert 'data-testid="withdrawal-warning"' not in page  # no payout account yet: no withdrawal form
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
    page = client.get("/merchant/money/withdrawals/").content.decode()
    assert 'data-testid="withdrawal-warning"' in page
    assert "Before you withdraw: check that the payout account is yours." in page


def test_the_tips_page_is_linked_from_every_page(db):
    client = Client()
    catalog = client.get("/").content.decode()
    assert 'href="/security/"' in catalog
    page = client.get("/security/")
    assert page.status_code == 200
    assert "The shop never asks for your key" in page.content.decode()
    with translation.override("zh-hans"):
        page = Client(headers={"accept-language": "zh-hans"}).get("/security/")
    assert "安全" in page.content.decode()
