"""Proof of liabilities: a Merkle sum tree over what the platform owes each creditor.

Creditors are merchants (available + in escrow + in reserve) and buyers (refunds booked but not yet
paid by the gateway). Each leaf commits to `sha256(nonce:entity)` and the amount; only the creditor
gets the nonce (in their proof), so the public tree says nothing about who is who. Each inner node
commits to both children's hashes and sums, so nobody can hide a debt behind a negative or altered
sibling. An odd node at the end of a level moves up unchanged.
"""

import hashlib
import json
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Sum
from django.utils.translation import gettext as _

from accounts.services import audit_record
from escrow import ledger
from escrow.models import (
    AccountKind,
    LedgerAccount,
    LiabilityLeaf,
    LiabilityPublication,
    Refund,
    RefundStatus,
)

PROOF_VERSION = 1


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def leaf_hash(*, entity: str, nonce: str, amount: int) -> str:
    return _sha(f"leaf:{_sha(f'{nonce}:{entity}')}:{amount}")


def node_hash(left: tuple[str, int], right: tuple[str, int]) -> str:
    return _sha(f"node:{left[0]}:{left[1]}:{right[0]}:{right[1]}")


def _levels(leaves: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
    levels = [leaves or [(_sha("empty"), 0)]]
    while len(levels[-1]) > 1:
        level, up = levels[-1], []
        for i in range(0, len(level), 2):
            if i + 1 < len(level):
                up.append((node_hash(level[i], level[i + 1]), level[i][1] + level[i + 1][1]))
            else:
                up.append(level[i])
        levels.append(up)
    return levels


def merchant_owed(currency: str) -> dict[int, int]:
    """What each merchant is owed: available (posted) + held in escrow for them + reserve."""
    owed: dict[int, int] = defaultdict(int)
    for row in LedgerAccount.objects.filter(
        currency=currency,
        kind__in=[AccountKind.MERCHANT_AVAILABLE, AccountKind.MERCHANT_RESERVE],
        merchant__isnull=False,
    ):
        owed[row.merchant_id] += row.credits_posted - row.debits_posted + row.credits_pending
    return {pk: amount for pk, amount in owed.items() if amount}


def buyer_owed(currency: str) -> dict[str, int]:
    rows = (
        Refund.objects.filter(currency=currency, status=RefundStatus.REQUESTED)
        .values("order__email")
        .annotate(total=Sum("amount"))
    )
    owed: dict[str, int] = defaultdict(int)
    for row in rows:
        owed[row["order__email"].strip().lower()] += row["total"]
    return dict(owed)


def funds_held(currency: str) -> int:
    """What the ledger shows the platform holding: money in at the gateways, less refunds and payouts paid."""
    clearing = ledger.platform_account(AccountKind.GATEWAY_CLEARING, currency)
    payouts = ledger.platform_account(AccountKind.PAYOUTS, currency)
    return (clearing.debits_posted - clearing.credits_posted) - payouts.credits_posted


@transaction.atomic
def liabilities_publish(*, currency: str, now: datetime) -> LiabilityPublication:
    """Build and store the tree for one currency; the root hash and total become public."""
    entries = [(f"merchant:{pk}", pk, amount) for pk, amount in merchant_owed(currency).items()]
    entries += [(f"buyer:{email}", None, amount) for email, amount in buyer_owed(currency).items()]
    secrets.SystemRandom().shuffle(entries)  # positions say nothing about who joined when
    rows = [
        LiabilityLeaf(position=i, entity=entity, merchant_id=merchant_pk, nonce=secrets.token_hex(16), amount=amount)
        for i, (entity, merchant_pk, amount) in enumerate(entries)
    ]
    levels = _levels([(leaf_hash(entity=r.entity, nonce=r.nonce, amount=r.amount), r.amount) for r in rows])
    root, total = levels[-1][0]
    publication = LiabilityPublication.objects.create(
        currency=currency,
        root_hash=root,
        total=total,
        funds_held=funds_held(currency),
        leaf_count=len(rows),
        published_at=now,
    )
    for row in rows:
        row.publication = publication
    LiabilityLeaf.objects.bulk_create(rows, batch_size=1000)
    audit_record(
        action="liabilities.published",
        subject=publication,
        now=now,
        data={"root": root, "total": total, "leaves": len(rows)},
    )
    return publication


def proof_for(*, leaf: LiabilityLeaf) -> dict:
    """The inclusion proof of one leaf: what its creditor downloads."""
    publication = leaf.publication
    leaves = list(publication.leaves.order_by("position"))
    levels = _levels([(leaf_hash(entity=r.entity, nonce=r.nonce, amount=r.amount), r.amount) for r in leaves])
    path, index = [], leaf.position
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(
                {"side": "left" if sibling < index else "right", "hash": level[sibling][0], "sum": level[sibling][1]}
            )
        index //= 2
    return {
        "version": PROOF_VERSION,
        "currency": publication.currency,
        "published_at": publication.published_at.isoformat(),
        "root_hash": publication.root_hash,
        "total": publication.total,
        "leaf": {"entity": leaf.entity, "nonce": leaf.nonce, "amount": leaf.amount},
        "path": path,
    }


@dataclass(frozen=True)
class ProofCheck:
    valid: bool
    message: str
    publication: LiabilityPublication | None = None


def proof_root(proof: dict) -> tuple[str, int]:
    """Recompute the root (hash, sum) from a proof; raises ValueError for a malformed proof."""
    leaf = proof["leaf"]
    amount = int(leaf["amount"])
    if amount < 0:
        raise ValueError("negative amount")
    current = (leaf_hash(entity=str(leaf["entity"]), nonce=str(leaf["nonce"]), amount=amount), amount)
    for step in proof["path"]:
        sibling = (str(step["hash"]), int(step["sum"]))
        if sibling[1] < 0:
            raise ValueError("negative sibling sum")
        if step["side"] == "left":
            current = (node_hash(sibling, current), sibling[1] + current[1])
        elif step["side"] == "right":
            current = (node_hash(current, sibling), current[1] + sibling[1])
        else:
            raise ValueError("bad side")
    return current


def proof_verify(*, proof_text: str | bytes) -> ProofCheck:
    """Check a proof against the root the platform published (not against what the proof claims)."""
    try:
        proof = json.loads(proof_text)
        root, total = proof_root(proof)
        claimed = str(proof["root_hash"])
        currency = str(proof["currency"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return ProofCheck(False, _("This is not a well-formed liability proof."))
    publication = LiabilityPublication.objects.filter(root_hash=claimed, currency=currency).first()
    if publication is None:
        return ProofCheck(False, _("No published root matches this proof."))
    if (root, total) != (publication.root_hash, publication.total):
        return ProofCheck(False, _("The proof does not lead to the published root: it was altered."), publication)
    return ProofCheck(True, _("The proof is included in the published root."), publication)
