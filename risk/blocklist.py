"""The block list: e-mails (exact or a wildcard pattern), IPs and CIDR ranges, devices and payout
accounts, each with a reason and an optional expiry. The engine consults it before any rule."""

from datetime import datetime
from fnmatch import fnmatchcase
from ipaddress import ip_address, ip_network

from core import crypto
from risk.context import RiskContext
from risk.models import BlockEntry, BlockKind


def payout_digest(number: str) -> str:
    """A payout account number as the block list keeps it: a keyed hash, never the number itself."""
    normalised = "".join(number.split()).upper()
    return crypto.keyed_hash(crypto.index_subkey(b"risk.payout_account"), normalised.encode()).hex()


def normalise(kind: str, value: str) -> str:
    """How an entry is stored: e-mails lower-cased, CIDRs canonical, payout numbers hashed."""
    value = value.strip()
    if kind == BlockKind.EMAIL:
        return value.lower()
    if kind == BlockKind.IP:
        return str(ip_network(value, strict=False)) if "/" in value else str(ip_address(value))
    if kind == BlockKind.PAYOUT_ACCOUNT and len(value) != 64:
        return payout_digest(value)
    return value


def _ip_in(address: str, cidr: str) -> bool:
    try:
        return ip_address(address) in ip_network(cidr, strict=False)
    except ValueError:
        return False


def blocklist_match(*, context: RiskContext, now: datetime, ruleset=None) -> tuple[BlockEntry, str] | None:
    """The first live entry (by pk) the act matches, with the value it matched (None: nothing matches).

    Read from the process's snapshot of the block list (risk/ruleset.py), so no statement is sent."""
    if ruleset is None:  # the engine passes the snapshot it decides with
        from risk.ruleset import ruleset as current

        ruleset = current()
    snapshot = ruleset
    if not (snapshot.patterns or snapshot.exact):  # an empty list (the usual case): nothing to normalise
        return None
    email = context.email.strip().lower()
    payout = payout_digest(context.payout_account) if context.payout_account else ""
    exact = {BlockKind.EMAIL: email, BlockKind.IP: context.ip, BlockKind.DEVICE: context.device}
    exact[BlockKind.PAYOUT_ACCOUNT] = payout
    candidates = [*snapshot.patterns]
    for kind, value in exact.items():
        if value:
            candidates += snapshot.exact.get((kind, value), ())
    for entry in sorted(candidates, key=lambda entry: entry.pk):
        if entry.expires_at is not None and entry.expires_at <= now:
            continue
        if entry.kind == BlockKind.EMAIL and email and (entry.value == email or fnmatchcase(email, entry.value)):
            return entry, email
        if entry.kind == BlockKind.IP and context.ip and (entry.value == context.ip or _ip_in(context.ip, entry.value)):
            return entry, context.ip
        if entry.kind == BlockKind.DEVICE and entry.value == context.device:
            return entry, context.device
        if entry.kind == BlockKind.PAYOUT_ACCOUNT and entry.value == payout:
            return entry, "…" + context.payout_account[-4:]
    return None
