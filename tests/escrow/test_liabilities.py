"""The Merkle sum tree: a proof verifies; a changed amount, sibling hash or sibling sum does not."""

import json

import pytest
from django.utils import timezone

from escrow import liabilities, refunds
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


def owed_by_entity(publication) -> dict[str, int]:
    owed: dict[str, int] = {}
    for leaf in publication.leaves.all():
        owed[leaf.entity] = owed.get(leaf.entity, 0) + leaf.amount
    return owed


def test_tree_covers_merchants_and_buyers_owed(published):
    owed = owed_by_entity(published)
    assert len(owed) == 5
    assert published.total == sum(owed.values()) == 4 * 9500 + 10000  # the root's sum: all that is owed
    assert published.funds_held == 5 * 10000  # the refund is not paid out yet
    assert owed["buyer:refund.me@example.com"] == 10000
    assert published.leaf_count == published.leaves.count()


def test_each_liability_is_split_over_several_leaves_and_no_proof_shows_another_balance(published):
    owed = owed_by_entity(published)
    assert published.leaf_count >= 2 * len(owed)
    assert all(leaf.amount > 0 for leaf in published.leaves.all())
    for entity, amount in owed.items():
        leaf = published.leaves.filter(entity=entity).first()
        proof = liabilities.proof_for(leaf=leaf)
        assert proof["amount"] == amount and len(proof["leaves"]) >= 2
        assert check(proof)
        others = {a for e, a in owed.items() if e != entity}
        siblings = {step["sum"] for part in proof["leaves"] for step in part["path"]}
        assert not siblings & others, (entity, siblings, others)


def test_a_proof_hiding_one_of_the_creditors_leaves_does_not_verify(published):
    leaf = published.leaves.exclude(merchant=None).first()
    proof = liabilities.proof_for(leaf=leaf)
    proof["leaves"] = proof["leaves"][1:]  # still claims the whole amount
    assert not check(proof)
    proof["amount"] = sum(part["amount"] for part in proof["leaves"])
    assert check(proof)  # each part is a real leaf; the amount must be what they add up to
    proof["leaves"].append(proof["leaves"][0])
    proof["amount"] += proof["leaves"][0]["amount"]
    assert not check(proof)  # one leaf counted twice


def test_every_proof_verifies(published):
    for leaf in published.leaves.all():
        assert check(liabilities.proof_for(leaf=leaf))


@pytest.mark.parametrize("tamper", ["amount", "sibling_hash", "sibling_sum", "nonce", "root"])
def test_a_tampered_proof_does_not_verify(published, tamper):
    leaf = published.leaves.exclude(merchant=None).first()
    proof = liabilities.proof_for(leaf=leaf)
    part = proof["leaves"][0]
    assert part["path"]
    if tamper == "amount":
        part["amount"] += 1
        proof["amount"] += 1
    elif tamper == "sibling_hash":
        part["path"][0]["hash"] = "0" * 64
    elif tamper == "sibling_sum":
        part["path"][0]["sum"] -= 1
    elif tamper == "nonce":
        part["nonce"] = "00" * 16
    else:
        proof["root_hash"] = "f" * 64
    assert not check(proof)


def test_leaves_do_not_name_their_creditor(published):
    proof = liabilities.proof_for(leaf=published.leaves.first())
    for step in (step for part in proof["leaves"] for step in part["path"]):
        assert "merchant:" not in step["hash"] and "@" not in step["hash"]
