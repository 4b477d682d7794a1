"""AES-256-GCM sealing under the versioned master keys (`CARDKEY_MASTER_KEYS`), for every app.

Two layers, one set of master keys:
- data keys: a random 256-bit key per owner (a merchant), wrapped under the newest master key and kept
  beside its owner; rotation re-wraps them and touches nothing they sealed;
- small secrets sealed directly under a master key (`seal` / `unseal`), each carrying its master key's
  version, so rotation re-seals them one by one (`resealed`).

Every ciphertext is bound to its row and purpose by associated data, so one copied onto another row,
or used for another purpose, does not open. Keyed hashes (duplicate detection, backup codes) use keys
derived from `CARDKEY_INDEX_KEY` with HKDF, one per purpose (and per merchant for card keys).
This module imports none of our apps.
"""

import base64
import binascii
import hmac
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

NONCE_BYTES = 12
PAD_BLOCK = 64
SEALED_FORMAT = b"\x01"  # first byte of what `seal` returns: the layout below, version 1


class CryptoError(Exception):
    """Something could not be sealed or opened; the message says what and why."""


def _decode_key(text: str, what: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise CryptoError(f"{what} is not valid base64.") from error
    if len(key) != 32:
        raise CryptoError(f"{what} must be 32 bytes, not {len(key)}.")
    return key


def parse_master_keys(spec: str) -> list[tuple[str, bytes]]:
    """`"v2:<b64>,v1:<b64>"` → `[("v2", key), ("v1", key)]`, newest first."""
    keys = []
    for part in (p for p in spec.split(",") if p.strip()):
        version, separator, encoded = part.strip().partition(":")
        if not separator or not version:
            raise CryptoError(f"CARDKEY_MASTER_KEYS entry {part!r} is not 'version:base64'.")
        if len(version.encode()) > 255:
            raise CryptoError(f"CARDKEY_MASTER_KEYS version {version[:20]!r}… is longer than 255 bytes.")
        keys.append((version, _decode_key(encoded, f"Master key {version}")))
    if not keys:
        raise CryptoError("CARDKEY_MASTER_KEYS holds no key.")
    return keys


def master_keys() -> list[tuple[str, bytes]]:
    return parse_master_keys(settings.CARDKEY_MASTER_KEYS)


def newest_master_version() -> str:
    return master_keys()[0][0]


def _master_key(version: str, *, what: str) -> bytes:
    master = dict(master_keys()).get(version)
    if master is None:
        raise CryptoError(f"Master key {version!r} is not in CARDKEY_MASTER_KEYS; {what} cannot be opened.")
    return master


# --- AES-GCM with a fresh nonce -------------------------------------------------------------------


def aead_seal(*, key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """`nonce || ciphertext+tag` under `key` (a data key or a master key)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aead_open(*, key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """Raises `InvalidTag` for a wrong key, wrong associated data or tampered bytes."""
    sealed = bytes(sealed)
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)


# --- data keys ---------------------------------------------------------------------------------------


def data_key_generate() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def data_key_wrap(*, data_key: bytes, associated_data: bytes) -> tuple[str, bytes]:
    """Seal a data key under the newest master key; returns (master version, wrapped)."""
    version, master = master_keys()[0]
    return version, aead_seal(key=master, plaintext=data_key, associated_data=associated_data)


def data_key_unwrap(*, version: str, wrapped: bytes, associated_data: bytes, owner: str) -> bytes:
    """The data key; `owner` names it in errors ("the data key of merchant 7")."""
    return _data_key_unwrap_cached(settings.CARDKEY_MASTER_KEYS, version, bytes(wrapped), associated_data, owner)


@lru_cache(maxsize=4096)
def _data_key_unwrap_cached(spec: str, version: str, wrapped: bytes, associated_data: bytes, owner: str) -> bytes:
    master = dict(parse_master_keys(spec)).get(version)
    if master is None:
        raise CryptoError(f"Master key {version!r} is not in CARDKEY_MASTER_KEYS; {owner} cannot be opened.")
    try:
        return aead_open(key=master, sealed=wrapped, associated_data=associated_data)
    except InvalidTag as error:
        raise CryptoError(
            f"Master key {version!r} does not open {owner}: wrong master key or tampered data."
        ) from error


# --- small secrets sealed directly under a master key ---------------------------------------------
# Layout: SEALED_FORMAT || len(version) || version || nonce || ciphertext+tag; the header is part of
# the associated data, so a changed version or format byte does not open either.


def seal(plaintext: bytes, *, associated_data: bytes) -> bytes:
    """Seal a small secret under the newest master key, bound to `associated_data`."""
    version, master = master_keys()[0]
    header = _header(version)
    return header + aead_seal(key=master, plaintext=plaintext, associated_data=header + associated_data)


def unseal(sealed: bytes, *, associated_data: bytes, what: str = "a sealed secret") -> bytes:
    """Open what `seal` made with the same `associated_data`, or raise `CryptoError` naming `what`."""
    version, body = _split(bytes(sealed), what=what)
    master = _master_key(version, what=what)
    try:
        return aead_open(key=master, sealed=body, associated_data=_header(version) + associated_data)
    except InvalidTag as error:
        raise CryptoError(
            f"Master key {version!r} does not open {what}: wrong master key, tampered data or moved ciphertext."
        ) from error


def sealed_version(sealed: bytes) -> str:
    """The master key version `sealed` is under."""
    return _split(bytes(sealed), what="a sealed secret")[0]


def resealed(sealed: bytes, *, associated_data: bytes, what: str = "a sealed secret") -> bytes | None:
    """`sealed` re-sealed under the newest master key, or None if it already is under it."""
    if sealed_version(sealed) == newest_master_version():
        return None
    return seal(unseal(sealed, associated_data=associated_data, what=what), associated_data=associated_data)


def _header(version: str) -> bytes:
    encoded = version.encode()
    return SEALED_FORMAT + bytes([len(encoded)]) + encoded


def _split(sealed: bytes, *, what: str) -> tuple[str, bytes]:
    if len(sealed) < 2 or sealed[:1] != SEALED_FORMAT or len(sealed) < 2 + sealed[1] + NONCE_BYTES + 16:
        raise CryptoError(f"{what} is not in a known sealed format.")
    end = 2 + sealed[1]
    return sealed[2:end].decode(), sealed[end:]


# --- padding: a ciphertext's length must not tell a plaintext's length ------------------------------


def pad(data: bytes, *, block: int = PAD_BLOCK) -> bytes:
    """`data` with a 2-byte length prefix, zero-filled to the next multiple of `block` bytes."""
    if len(data) > 0xFFFF:
        raise CryptoError("Too long to pad (over 65,535 bytes).")
    framed = len(data).to_bytes(2, "big") + data
    return framed + bytes(-len(framed) % block)


def unpad(padded: bytes) -> bytes:
    length = int.from_bytes(padded[:2], "big")
    if len(padded) < 2 + length:
        raise CryptoError("Padded data is shorter than its length prefix.")
    return padded[2 : 2 + length]


# --- keyed hashes --------------------------------------------------------------------------------------


def index_key() -> bytes:
    return _decode_key(settings.CARDKEY_INDEX_KEY, "CARDKEY_INDEX_KEY")


def index_subkey(info: bytes) -> bytes:
    """A 256-bit key for one purpose (`info`), derived from `CARDKEY_INDEX_KEY` with HKDF-SHA256."""
    return _index_subkey_cached(settings.CARDKEY_INDEX_KEY, info)


@lru_cache(maxsize=4096)
def _index_subkey_cached(spec: str, info: bytes) -> bytes:
    root = _decode_key(spec, "CARDKEY_INDEX_KEY")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)


def keyed_hash(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, "sha256").digest()
