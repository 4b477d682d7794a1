"""The Merkle sum tree: a proof verifies; a changed amount, sibling hash or sibling sum does not."""

import json

import pytest
from django.utils import timezone

from escrow import liabilities, refunds
from escrow.models import LiabilityLeaf
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(run_on_commit, django_capture_on_commit_callbacks, settings):
    settings.RESERVE_PERCENT = 0
    for _ in range(4):  # four merchants, one order each
        with run_on_commit():
            factories.order_delivered(product=factories.product_create(stock=1))
    product = factories.product_create(stock=1)
    with run_on_commit():
        order = factories.order_delivered(product=product, email="Refund.Me@example.com")
    with django_capture_on_commit_callbacks(execute=False):  # the gateway has not paid it yet
        refunds.order_refund(order_pk=order.pk, now=timezone.now())
    return liabilities.liabilities_publish(currency="CNY", now=timezone.now())


def check(proof) -> bool:
    return liabilities.proof_verify(proof_text=json.dumps(proof)).valid


def test_tree_covers_merchants_and_buyers_owed(published):
    assert published.leaf_count == 5
    assert published.total == 4 * 9500 + 10000
    assert published.funds_held == 5 * 10000  # the refund is not paid out yet
    buyer = LiabilityLeaf.objects.get(publication=published, entity="buyer:refund.me@example.com")
    assert buyer.amount == 10000


def test_every_proof_verifies(published):
    for leaf in published.leaves.all():
        assert check(liabilities.proof_for(leaf=leaf))


@pytest.mark.parametrize("tamper", ["amount", "sibling_hash", "sibling_sum", "nonce", "root"])
def test_a_tampered_proof_does_not_verify(published, tamper):
    leaf = published.leaves.exclude(merchant=None).first()
    proof = liabilities.proof_for(leaf=leaf)
    assert proof["path"]
    if tamper == "amount":
        proof["leaf"]["amount"] += 1
    elif tamper == "sibling_hash":
        proof["path"][0]["hash"] = "0" * 64
    elif tamper == "sibling_sum":
        proof["path"][0]["sum"] -= 1
    elif tamper == "nonce":
        proof["leaf"]["nonce"] = "00" * 16
    else:
        proof["root_hash"] = "f" * 64
    assert not check(proof)


def test_leaves_do_not_name_their_creditor(published):
    proof = liabilities.proof_for(leaf=published.leaves.first())
    for step in proof["path"]:
        assert "merchant:" not in step["hash"] and "@" not in step["hash"]
