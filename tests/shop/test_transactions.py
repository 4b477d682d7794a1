"""Which shop services own their transaction, and which must run inside the caller's.

A top-level service (called by a view, a task, the admin or a command) is `atomic(durable=True)`:
called inside another transaction it fails loudly instead of quietly becoming part of it. An inner step
(called by escrow inside its own transaction) asserts that it runs inside one. `product_create` and
`product_update` stay plain `atomic`: the admin's change form runs them inside Django's own transaction.
"""

import pytest
from django.db import transaction
from django.utils import timezone

from shop import services
from shop.models import CardKey, CardKeyStatus, StockUpload, StockUploadSource
from tests.factories import merchant_create, product_create, user_create

pytestmark = pytest.mark.django_db

TOP_LEVEL = [
    "merchant_signup",
    "merchant_signup_visitor",
    "merchant_approve",
    "merchant_reject",
    "product_pause",
    "product_resume",
    "product_edit",
    "product_approve",
    "product_reject",
    "product_review_request",
    "merchant_kyc_document_read",
    "keys_import_batch",
    "stock_upload_start",
    "keys_revoke",
    "keys_export_record",
    "merchant_api_token_create_unchecked",
    "merchant_api_token_revoke",
    "webhook_endpoint_delete",
    "webhook_endpoint_secret_rotate",
    "webhook_delivery_resend",
]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_a_top_level_service_refuses_to_run_inside_another_transaction(name):
    service = getattr(services, name)
    # The durable block is entered before the body runs, so no arguments are needed to see it refuse.
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        service()


def test_a_durable_service_called_inside_a_transaction_changes_nothing():
    product = product_create(stock=3)
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        services.keys_revoke(product=product, actor=None, now=timezone.now())
    assert CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE).count() == 3


def test_each_stock_upload_batch_commits_on_its_own(product_with_upload):
    """The import's batches commit one by one (a crash keeps what was imported), so running the import
    inside a caller's transaction is refused before a key is written."""
    upload = product_with_upload
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        services.stock_upload_process(upload_pk=upload.pk, now=timezone.now())
    upload.refresh_from_db()
    assert (upload.status, upload.processed, upload.imported) == ("running", 0, 0)
    assert not CardKey.objects.filter(product=upload.product).exists()


@pytest.fixture
def product_with_upload(django_capture_on_commit_callbacks):
    product = product_create(stock=0)
    with django_capture_on_commit_callbacks(execute=False):  # the import itself is run by the test
        return services.stock_upload_start(
            merchant=product.merchant,
            product_pk=product.pk,
            chunks=[b"A\nB\n"],
            source=StockUploadSource.PASTE,
            actor=None,
            now=timezone.now(),
        )


@pytest.mark.django_db(transaction=True)
def test_the_inner_key_steps_refuse_to_run_outside_a_transaction():
    """Outside a transaction each statement would commit alone: a reservation half made, or the COPY's
    temporary rows gone before the INSERT reads them. So each step asserts, before touching a row."""
    product = product_create(stock=2)
    [first, second] = CardKey.objects.filter(product=product).order_by("pk").values_list("pk", flat=True)
    steps = {
        "keys_reserve": lambda: services.keys_reserve(product=product, quantity=1, order_pk=1),
        "keys_release": lambda: services.keys_release(order_pk=1),
        "keys_sell": lambda: services.keys_sell(order_pk=1),
        "keys_refund_restock": lambda: services.keys_refund_restock(order_pk=1, key_pks=[first]),
        "keys_refund_revoke": lambda: services.keys_refund_revoke(order_pk=1, key_pks=[first]),
        "key_replace": lambda: services.key_replace(order_pk=1, key_pk=second),
        "card_keys_insert_skipping_duplicates": lambda: services.card_keys_insert_skipping_duplicates(
            [(product.pk, product.merchant_id, None, b"f" * 32, b"sealed", CardKeyStatus.AVAILABLE, timezone.now())]
        ),
    }
    for name, step in steps.items():
        with pytest.raises(AssertionError, match="transaction"):
            step()
        assert list(CardKey.objects.filter(product=product).order_by("pk").values_list("status", flat=True)) == [
            CardKeyStatus.AVAILABLE,
            CardKeyStatus.AVAILABLE,
        ], name
    assert CardKey.objects.filter(product=product).count() == 2


def test_the_merchant_sign_up_still_works_end_to_end():
    """`merchant_signup_visitor` creates the user and the merchant through the inner steps."""
    merchant = services.merchant_signup_visitor(
        username="newseller",
        email="new@example.com",
        password="pw-for-tests-1",
        name="New",
        contact="",
        now=timezone.now(),
    )
    assert merchant is not None and merchant.user.username == "newseller"
    existing = user_create()
    assert services.merchant_signup(user=existing, name="Mine", contact="", now=timezone.now()).user == existing
    assert StockUpload.objects.count() == 0
    assert merchant_create().is_approved
