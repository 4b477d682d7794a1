"""The audit trail's hash chain: what an entry's hash covers, and the walk that checks the chain.

Writers never touch the chain: `audit_record` inserts a plain row in the caller's transaction. The
sealing task (`accounts.services.audit_chain_seal`, every few seconds) takes every entry not sealed yet
(`seq IS NULL`), in id order, gives each the next `seq` and its `hash`:

    hash = SHA-256(prev_hash + "\\n" + canonical JSON of [seq, id, at, actor, action, subject, data])

so each hash covers every entry before it. An entry whose transaction commits late (a lower id than
entries already sealed) is simply picked up by the next run with a higher `seq`: the chain order is the
sealing order, never a guess about ids, so no entry is skipped and no writer waits for another.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS_HASH = "0" * 64


def entry_content(*, seq: int, pk: int, at: datetime, actor_id, action, subject_type, subject_id, data) -> str:
    """The canonical text of an entry: the same bytes from the row whoever reads it (UTC, sorted keys)."""
    return json.dumps(
        [
            seq,
            pk,
            at.astimezone(UTC).isoformat(timespec="microseconds"),
            actor_id,
            action,
            subject_type,
            subject_id,
            data,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def entry_hash(*, prev_hash: str, content: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def row_hash(entry, *, seq: int, prev_hash: str) -> str:
    """The hash an `AuditEntry` gets (or should have) at `seq` after `prev_hash`."""
    content = entry_content(
        seq=seq,
        pk=entry.pk,
        at=entry.at,
        actor_id=entry.actor_id,
        action=entry.action,
        subject_type=entry.subject_type,
        subject_id=entry.subject_id,
        data=entry.data,
    )
    return entry_hash(prev_hash=prev_hash, content=content)


@dataclass
class ChainReport:
    sealed: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    head_entry: int | None = None
    unsealed: int = 0
    oldest_unsealed_at: datetime | None = None
    checkpoints: int = 0
    problem: str | None = None


CONTENT_FIELDS = ("pk", "at", "actor_id", "action", "subject_type", "subject_id", "data")
CHAIN_FIELDS = ("pk", "seq", "prev_hash", "hash", "at", "actor_id", "action", "subject_type", "subject_id", "data")


def chain_verify() -> ChainReport:
    """Walk the sealed entries in chain order and stop at the first one that does not fit: a missing
    `seq` (an entry deleted), a link to something other than the entry before it (reordered, or the
    entry before it replaced), or a hash that does not cover its content (edited). Then check every
    published checkpoint against the chain, and count the entries not sealed yet (not an error)."""
    from accounts.models import AuditCheckpoint, AuditEntry

    report = ChainReport()
    prev_hash, prev_seq, prev_pk = GENESIS_HASH, 0, None
    sealed = AuditEntry.objects.filter(seq__isnull=False).order_by("seq").only(*CHAIN_FIELDS)
    hashes_at: dict[int, str] = {}
    checkpoints = list(AuditCheckpoint.objects.order_by("seq").values_list("seq", "hash", "published_at"))
    wanted = {seq for seq, _, _ in checkpoints}
    for entry in sealed.iterator(chunk_size=2000):
        after = f"entry {prev_pk} (seq {prev_seq})" if prev_pk is not None else "the start of the chain"
        if entry.seq != prev_seq + 1:
            missing = f"seq {prev_seq + 1}" if entry.seq == prev_seq + 2 else f"seqs {prev_seq + 1} to {entry.seq - 1}"
            report.problem = (
                f"entry at {missing} is missing (deleted): "
                f"the chain jumps from {after} to entry {entry.pk} (seq {entry.seq})"
            )
            return report
        if entry.prev_hash != prev_hash:
            report.problem = (
                f"entry {entry.pk} (seq {entry.seq}) is out of order: it does not follow {after} "
                "(entries reordered, or the one before it rewritten with a new hash)"
            )
            return report
        if row_hash(entry, seq=entry.seq, prev_hash=prev_hash) != entry.hash:
            report.problem = f"entry {entry.pk} (seq {entry.seq}) was edited: its hash does not cover its content"
            return report
        prev_hash, prev_seq, prev_pk = entry.hash, entry.seq, entry.pk
        if entry.seq in wanted:
            hashes_at[entry.seq] = entry.hash
    report.sealed, report.head_seq, report.head_hash, report.head_entry = prev_seq, prev_seq, prev_hash, prev_pk
    for seq, hash_, published_at in checkpoints:
        if hashes_at.get(seq) != hash_:
            report.problem = (
                f"checkpoint seq {seq} published {published_at:%Y-%m-%d %H:%M:%S} UTC does not match the chain "
                "(entries up to it were rewritten, or the newest ones deleted)"
            )
            return report
    report.checkpoints = len(checkpoints)
    unsealed = AuditEntry.objects.filter(seq__isnull=True)
    report.unsealed = unsealed.count()
    if report.unsealed:
        report.oldest_unsealed_at = unsealed.order_by("pk").values_list("at", flat=True).first()
    return report
