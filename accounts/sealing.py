"""How two-factor secrets are kept: TOTP seeds sealed under the master keys (core/crypto.py), bound to
their device row; backup codes only as a keyed hash, under a key the database does not hold."""

import secrets
from base64 import b32encode

from core import crypto

BACKUP_CODE_INDEX_INFO = b"cardshop:backup-code"


def totp_seed_aad(device_pk: int) -> bytes:
    return b"cardshop:totp-seed:device:%d" % device_pk


def totp_seed_seal(seed: bytes, *, device_pk: int) -> bytes:
    return crypto.seal(seed, associated_data=totp_seed_aad(device_pk))


def totp_seed_unseal(sealed: bytes, *, device_pk: int) -> bytes:
    return crypto.unseal(sealed, associated_data=totp_seed_aad(device_pk), what=f"the TOTP seed of device {device_pk}")


def backup_code_new() -> str:
    """Eight letters and digits (40 random bits, base32), as django-otp's static tokens."""
    return b32encode(secrets.token_bytes(5)).decode().lower()


def backup_code_normalise(code: str) -> str:
    return "".join((code or "").split()).replace("-", "").lower()


def backup_code_digest(code: str) -> str:
    """HMAC-SHA256 (hex) of the normalised code under a key derived from CARDKEY_INDEX_KEY: without
    that key, a dumped digest cannot be tried against the 2^40 possible codes."""
    key = crypto.index_subkey(BACKUP_CODE_INDEX_INFO)
    return crypto.keyed_hash(key, backup_code_normalise(code).encode()).hex()
