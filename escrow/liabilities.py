"""Proof of liabilities: a Merkle sum tree over what the platform owes each creditor.

Creditors are merchants (available + in escrow + in reserve) and buyers (refunds booked but not yet
paid by the gateway). Each leaf commits to `sha256(nonce:entity)` and the amount; only the creditor
gets the nonce (in their proof), so the public tree says nothing about who is who. Each inner node
commits to both children's hashes and sums, so nobody can hide a debt behind a negative or altered
sibling. An odd node at the end of a level moves up unchanged.

Each creditor's amount is split into 2-4 random positive parts, one leaf each, shuffled among
everyone's: a proof shows its siblings' sums, and a sibling that was a whole leaf used to be another
creditor's exact balance. A creditor's proof lists all of their leaves; the check adds them up.
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

from accounts.models import AuditAction
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

PROOF_VERSION = 2
LEAF_PARTS = (2, 4)
# Tries at a layout where no node below the root happens to equal a creditor's whole amount. Each
# try fails only by coincidence, so a few suffice for small trees; past them (a huge tree where
# coincidences are certain) the layout with the fewest is kept: a coincidence says nothing about who.
LAYOUT_TRIES = 20


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
    # A merchant whose balance went negative (a chargeback after release) owes the platform: not a creditor.
    return {pk: amount for pk, amount in owed.items() if amount > 0}


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


def amount_split(amount: int, rng: secrets.SystemRandom) -> list[int]:
    """`amount` as 2-4 random positive parts adding up to it exactly (one part if it is 1 or less)."""
    if amount < 2:
        return [amount]
    parts = min(rng.randint(*LEAF_PARTS), amount)
    cuts = sorted(rng.sample(range(1, amount), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, amount], strict=True)]


def _layout(entries: list[tuple[str, int | None, int]]) -> tuple[list[LiabilityLeaf], list]:
    """Leaves (each creditor's parts, shuffled together) and the tree's levels."""
    rng = secrets.SystemRandom()
    wholes = {amount for _entity, _merchant_pk, amount in entries}
    best = None
    for _try in range(LAYOUT_TRIES):
        parts = [(entity, pk, part) for entity, pk, amount in entries for part in amount_split(amount, rng)]
        rng.shuffle(parts)  # positions say nothing about who joined when, nor which parts belong together
        rows = [
            LiabilityLeaf(position=i, entity=entity, merchant_id=pk, nonce=secrets.token_hex(16), amount=amount)
            for i, (entity, pk, amount) in enumerate(parts)
        ]
        levels = _levels([(leaf_hash(entity=r.entity, nonce=r.nonce, amount=r.amount), r.amount) for r in rows])
        exposed = sum(1 for level in levels[:-1] for _hash, total in level if total in wholes)
        if best is None or exposed < best[0]:
            best = (exposed, rows, levels)
        if exposed == 0 or len(entries) < 2:
            break
    return best[1], best[2]


@transaction.atomic(durable=True)
def liabilities_publish(*, currency: str, now: datetime) -> LiabilityPublication:
    """Build and store the tree for one currency; the root hash and total become public.

    The root's sum is exactly what is owed; every creditor's amount is spread over several leaves, so
    no proof shows anyone else's balance.
    """
    entries = [(f"merchant:{pk}", pk, amount) for pk, amount in merchant_owed(currency).items()]
    entries += [(f"buyer:{email}", None, amount) for email, amount in buyer_owed(currency).items()]
    rows, levels = _layout(entries)
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
        action=AuditAction.LIABILITIES_PUBLISHED,
        subject=publication,
        now=now,
        data={"root": root, "total": total, "leaves": len(rows), "creditors": len(entries)},
    )
    return publication


def _path(levels: list, position: int) -> list[dict]:
    path, index = [], position
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(
                {"side": "left" if sibling < index else "right", "hash": level[sibling][0], "sum": level[sibling][1]}
            )
        index //= 2
    return path


def proof_for(*, leaf: LiabilityLeaf) -> dict:
    """The inclusion proof of a creditor (the owner of `leaf`): every one of their leaves, with its path."""
    publication = leaf.publication
    leaves = list(publication.leaves.order_by("position"))
    levels = _levels([(leaf_hash(entity=r.entity, nonce=r.nonce, amount=r.amount), r.amount) for r in leaves])
    own = [r for r in leaves if r.entity == leaf.entity]
    return {
        "version": PROOF_VERSION,
        "currency": publication.currency,
        "published_at": publication.published_at.isoformat(),
        "root_hash": publication.root_hash,
        "total": publication.total,
        "entity": leaf.entity,
        "amount": sum(r.amount for r in own),
        "leaves": [{"nonce": r.nonce, "amount": r.amount, "path": _path(levels, r.position)} for r in own],
    }


@dataclass(frozen=True)
class ProofCheck:
    valid: bool
    message: str
    publication: LiabilityPublication | None = None


def _leaf_root(*, entity: str, leaf: dict) -> tuple[str, int]:
    amount = int(leaf["amount"])
    if amount < 0:
        raise ValueError("negative amount")
    current = (leaf_hash(entity=entity, nonce=str(leaf["nonce"]), amount=amount), amount)
    for step in leaf["path"]:
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


def proof_roots(proof: dict) -> tuple[set[tuple[str, int]], int]:
    """The roots (hash, sum) that a proof's leaves lead to, and the creditor's amount they add up to.

    Raises ValueError for a malformed proof: leaves that do not add up to the stated amount, or one
    leaf listed twice. Version 1 proofs (one leaf, `leaf` and `path`) are read too.
    """
    if "leaves" not in proof:  # version 1
        leaf = proof["leaf"]
        proof = {
            "entity": leaf["entity"],
            "amount": leaf["amount"],
            "leaves": [{"nonce": leaf["nonce"], "amount": leaf["amount"], "path": proof["path"]}],
        }
    entity, leaves = str(proof["entity"]), list(proof["leaves"])
    if not leaves or len({str(leaf["nonce"]) for leaf in leaves}) != len(leaves):
        raise ValueError("no leaves, or a leaf listed twice")
    roots = {_leaf_root(entity=entity, leaf=leaf) for leaf in leaves}
    amount = sum(int(leaf["amount"]) for leaf in leaves)
    if amount != int(proof["amount"]):
        raise ValueError("the leaves do not add up to the amount")
    return roots, amount


def proof_verify(*, proof_text: str | bytes) -> ProofCheck:
    """Check a proof against the root the platform published (not against what the proof claims)."""
    try:
        proof = json.loads(proof_text)
        roots, _amount = proof_roots(proof)
        claimed = str(proof["root_hash"])
        currency = str(proof["currency"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return ProofCheck(False, _("This is not a well-formed liability proof."))
    publication = LiabilityPublication.objects.filter(root_hash=claimed, currency=currency).first()
    if publication is None:
        return ProofCheck(False, _("No published root matches this proof."))
    if roots != {(publication.root_hash, publication.total)}:
        return ProofCheck(False, _("The proof does not lead to the published root: it was altered."), publication)
    return ProofCheck(True, _("The proof is included in the published root."), publication)
