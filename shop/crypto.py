"""Envelope encryption of card keys.

Master keys (`CARDKEY_MASTER_KEYS`, versioned, newest first) wrap one data key per merchant; each card
key is sealed with AES-256-GCM under its merchant's data key, a fresh 96-bit nonce, and associated data
naming its product and fingerprint, so a ciphertext copied onto another row does not open. Duplicates
are found by an HMAC of the normalised key under a separate index key; nothing is decrypted for that.
"""

import base64
import binascii
import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

NONCE_BYTES = 12


class CardKeyCryptoError(Exception):
    """A key could not be sealed or opened; the message says which key and why."""


def _decode_key(text: str, what: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise CardKeyCryptoError(f"{what} is not valid base64.") from error
    if len(key) != 32:
        raise CardKeyCryptoError(f"{what} must be 32 bytes, not {len(key)}.")
    return key


def parse_master_keys(spec: str) -> list[tuple[str, bytes]]:
    """`"v2:<b64>,v1:<b64>"` → `[("v2", key), ("v1", key)]`, newest first."""
    keys = []
    for part in (p for p in spec.split(",") if p.strip()):
        version, separator, encoded = part.strip().partition(":")
        if not separator or not version:
            raise CardKeyCryptoError(f"CARDKEY_MASTER_KEYS entry {part!r} is not 'version:base64'.")
        keys.append((version, _decode_key(encoded, f"Master key {version}")))
    if not keys:
        raise CardKeyCryptoError("CARDKEY_MASTER_KEYS holds no key.")
    return keys


def master_keys() -> list[tuple[str, bytes]]:
    return parse_master_keys(settings.CARDKEY_MASTER_KEYS)


def _data_key_aad(merchant_pk: int) -> bytes:
    return f"cardshop:data-key:merchant:{merchant_pk}".encode()


def data_key_generate() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def data_key_wrap(*, data_key: bytes, merchant_pk: int) -> tuple[str, bytes]:
    """Seal a merchant's data key under the newest master key; returns (master version, sealed)."""
    version, master = master_keys()[0]
    nonce = os.urandom(NONCE_BYTES)
    return version, nonce + AESGCM(master).encrypt(nonce, data_key, _data_key_aad(merchant_pk))


def data_key_unwrap(*, version: str, wrapped: bytes, merchant_pk: int) -> bytes:
    return _data_key_unwrap_cached(settings.CARDKEY_MASTER_KEYS, version, bytes(wrapped), merchant_pk)


@lru_cache(maxsize=4096)
def _data_key_unwrap_cached(spec: str, version: str, wrapped: bytes, merchant_pk: int) -> bytes:
    master = dict(parse_master_keys(spec)).get(version)
    if master is None:
        raise CardKeyCryptoError(
            f"Master key {version!r} is not in CARDKEY_MASTER_KEYS; the data key of merchant "
            f"{merchant_pk} cannot be opened."
        )
    try:
        return AESGCM(master).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _data_key_aad(merchant_pk))
    except InvalidTag as error:
        raise CardKeyCryptoError(
            f"Master key {version!r} does not open the data key of merchant {merchant_pk}: "
            "wrong master key or tampered data."
        ) from error


def index_key() -> bytes:
    return _decode_key(settings.CARDKEY_INDEX_KEY, "CARDKEY_INDEX_KEY")


def normalise(raw: str) -> str:
    """The form duplicates are compared in: trimmed at both ends, inner whitespace kept."""
    return raw.strip()


def fingerprint(normalised: str, *, key: bytes | None = None) -> bytes:
    return hmac.new(key or index_key(), normalised.encode(), hashlib.sha256).digest()


def card_key_aad(*, product_pk: int, fingerprint: bytes) -> bytes:
    return b"cardshop:card-key:product:%d:" % product_pk + fingerprint


def card_key_seal(*, data_key: bytes, plaintext: str, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext.encode(), aad)


def card_key_open(*, data_key: bytes, sealed: bytes, aad: bytes) -> str:
    sealed = bytes(sealed)
    try:
        return AESGCM(data_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad).decode()
    except InvalidTag as error:
        raise CardKeyCryptoError("A card key does not open: wrong data key or moved ciphertext.") from error


class CardKeySealer:
    """Seals many keys of one product under one data key: the AESGCM and HMAC keys are set up once.

    Bulk imports use this; it produces exactly what `fingerprint` and `card_key_seal` produce.
    """

    def __init__(self, *, data_key: bytes, product_pk: int, index: bytes | None = None):
        self._aead = AESGCM(data_key)
        self._index = hmac.new(index or index_key(), digestmod=hashlib.sha256)
        self._aad_prefix = b"cardshop:card-key:product:%d:" % product_pk

    def fingerprint(self, normalised: str) -> bytes:
        mac = self._index.copy()
        mac.update(normalised.encode())
        return mac.digest()

    def seal(self, normalised: str, fingerprint: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, normalised.encode(), self._aad_prefix + fingerprint)
