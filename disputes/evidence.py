"""The evidence package of one dispute: a ZIP with a readable summary (`summary.html`), the machine
record (`record.json`), the attachments, and `manifest.json` (each member's SHA-256) with its Ed25519
signature (`signature`, base64) under the shop's key (`EVIDENCE_SIGNING_KEY`, a base64 32-byte seed).

`evidence_verify` answers whether a package is as the shop made it: the signature must hold over the
manifest, and every member must be listed with its digest, none missing, none added. `manage.py
verify_evidence FILE` is its command line.
"""

import base64
import hashlib
import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils import translation

from disputes import selectors
from disputes.attachments import attachment_path
from disputes.models import Dispute

FORMAT = "cardshop-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "signature"


# --- the key ------------------------------------------------------------------------------------------


def _private_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(settings.EVIDENCE_SIGNING_KEY, validate=True)
    if len(seed) != 32:
        raise ValueError("EVIDENCE_SIGNING_KEY must be the base64 of 32 bytes.")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key() -> Ed25519PublicKey:
    return _private_key().public_key()


def public_key_text() -> str:
    """The shop's evidence public key, base64 of its 32 raw bytes: publish it so anyone can check."""
    return base64.b64encode(public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


# --- the record -----------------------------------------------------------------------------------------


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def attachment_files(*, dispute: Dispute) -> list[tuple[str, bytes]]:
    """The dispute's screenshots as (name in the ZIP, bytes), read from where `disputes.attachments`
    stored them (re-encoded, without metadata)."""
    return [
        (f"attachments/{attachment.pk}-{attachment.stored_name}", attachment_path(attachment).read_bytes())
        for attachment in dispute.attachments.order_by("pk")
    ]


def evidence_record(*, dispute: Dispute, now: datetime, attachments: list[str]) -> dict:
    """The machine record: the order, payments, delivery, every reveal, messages, the decision and the
    ledger transfers. It holds no key material (keys are named by id only)."""
    order = dispute.order
    evidence = selectors.dispute_evidence(dispute=dispute)
    return {
        "format": FORMAT,
        "generated_at": _at(now),
        "dispute": {
            "id": dispute.pk,
            "reason": dispute.reason,
            "statement": dispute.statement,
            "status": dispute.status,
            "created_at": _at(dispute.created_at),
            "deadline": _at(dispute.deadline),
            "escalated_at": _at(dispute.escalated_at),
            "reopen_count": dispute.reopen_count,
            "keys": sorted(dispute.keys.values_list("pk", flat=True)),
        },
        "order": {
            "id": order.pk,
            "product": order.product.title,
            "merchant": order.merchant.name,
            "buyer": "account" if order.buyer_id else "guest",
            "quantity": order.quantity,
            "unit_price": order.unit_price,
            "amount": order.amount,
            "currency": order.currency,
            "status": order.status,
            "created_at": _at(order.created_at),
            "paid_at": _at(order.paid_at),
            "delivered_at": _at(order.delivered_at),
            "inspection_ends_at": _at(order.inspection_ends_at),
            "completed_at": _at(order.completed_at),
            "keys": list(order.card_keys.order_by("pk").values("id", "status")),
        },
        "payments": [
            {
                "gateway": payment.gateway,
                "payment_id": payment.payment_id,
                "amount": payment.amount,
                "currency": payment.currency,
                "status": payment.status,
                "received_amount": payment.received_amount,
                "received_currency": payment.received_currency,
                "created_at": _at(payment.created_at),
                "settled_at": _at(payment.settled_at),
            }
            for payment in evidence["payments"]
        ],
        "delivery": [
            {"at": _at(entry.at), "action": entry.action, "data": entry.data} for entry in evidence["deliveries"]
        ],
        "reveals": [
            {
                "at": _at(reveal.at),
                "ip": reveal.ip,
                "user_agent": reveal.user_agent,
                "channel": reveal.channel,
                "signed_in": reveal.user_id is not None,
            }
            for reveal in evidence["reveals"]
        ],
        "replacements": [
            {
                "at": _at(action.created_at),
                "replaced_key": action.replaced_key_id,
                "replacement_key": action.replacement_key_id,
            }
            for action in evidence["replacements"]
        ],
        "messages": [
            {
                "at": _at(message.created_at),
                "role": message.role,
                "question_for": message.question_for,
                "body": message.body,
            }
            for message in evidence["messages"]
        ],
        "attachments": attachments,
        "decision": {
            "outcome": dispute.outcome,
            "buyer_percent": dispute.buyer_percent,
            "reason": dispute.decision_reason,
            "resolved_at": _at(dispute.resolved_at),
            "by": "staff" if dispute.decided_by_id else ("rules" if dispute.outcome else None),
        },
        "transfers": [
            {
                "transfer_id": transfer.transfer_id,
                "kind": transfer.kind,
                "debit": transfer.debit_account.kind,
                "credit": transfer.credit_account.kind,
                "amount": transfer.amount,
                "currency": transfer.currency,
                "code": transfer.code,
                "at": _at(transfer.created_at),
            }
            for transfer in evidence["transfers"]
        ],
    }


# --- the package ----------------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def evidence_package(*, dispute: Dispute, now: datetime) -> bytes:
    """The signed ZIP of the dispute's evidence, as bytes."""
    files = attachment_files(dispute=dispute)
    record = evidence_record(dispute=dispute, now=now, attachments=[name for name, _ in files])
    # The summary is in English whatever the viewer's language: one package reads the same for everyone.
    with translation.override("en"):
        summary = render_to_string("disputes/evidence_summary.html", {"record": record})
    members = {
        "summary.html": summary.encode(),
        "record.json": json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True).encode(),
        **dict(files),
    }
    manifest = json.dumps(
        {
            "format": FORMAT,
            "dispute": dispute.pk,
            "generated_at": _at(now),
            "files": {name: _digest(data) for name, data in sorted(members.items())},
        },
        indent=2,
        sort_keys=True,
    ).encode()
    signature = base64.b64encode(_private_key().sign(manifest)) + b"\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(MANIFEST, manifest)
        archive.writestr(SIGNATURE, signature)
    return buffer.getvalue()


def evidence_response(*, dispute: Dispute, now: datetime) -> HttpResponse:
    response = HttpResponse(evidence_package(dispute=dispute, now=now), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="dispute-{dispute.pk}-evidence.zip"'
    response["Cache-Control"] = "private, no-store"
    return response


# --- checking a package ---------------------------------------------------------------------------------


class EvidenceUnreadable(Exception):
    """The file is not an evidence package at all (missing, not a ZIP)."""


@dataclass(frozen=True)
class Verdict:
    intact: bool
    problem: str = ""  # what was altered, when not intact
    dispute: int | None = None


def evidence_verify(*, data: bytes, key: Ed25519PublicKey | None = None) -> Verdict:
    """Check a package against the shop's public key. Raises `EvidenceUnreadable` when it is not a ZIP."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, EOFError) as error:
        raise EvidenceUnreadable(str(error)) from None
    with archive:
        contents = {}
        for name in names:
            try:
                contents[name] = archive.read(name)
            except (zipfile.BadZipFile, zlib.error, ValueError, EOFError):
                # The ZIP's own checksum or compression broke: the member's bytes were changed.
                return Verdict(False, f"{name} was altered (its data is damaged)")
    if MANIFEST not in contents or SIGNATURE not in contents:
        return Verdict(False, f"{MANIFEST} or {SIGNATURE} is missing")
    try:
        raw = contents[SIGNATURE]
        signature = base64.b64decode(raw.removesuffix(b"\n"), validate=True)
        # Byte for byte as written: base64 tolerates some changes (padding bits, the newline) that
        # would otherwise leave an altered file "intact".
        if base64.b64encode(signature) + b"\n" != raw:
            raise ValueError("the signature file is not as the shop wrote it")
        (key or public_key()).verify(signature, contents[MANIFEST])
    except (InvalidSignature, ValueError):
        return Verdict(False, f"bad signature: {MANIFEST} or {SIGNATURE} was altered, or another key signed it")
    manifest = json.loads(contents[MANIFEST])
    listed = manifest["files"]
    for name in names:
        if name in {MANIFEST, SIGNATURE}:
            continue
        if name not in listed:
            return Verdict(False, f"{name} was added")
        if _digest(contents[name]) != listed[name]:
            return Verdict(False, f"{name} was altered")
    for name in listed:
        if name not in contents:
            return Verdict(False, f"{name} is missing")
    return Verdict(True, dispute=manifest.get("dispute"))
