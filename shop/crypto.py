"""Envelope encryption of card keys (built on core/crypto.py).

Master keys (`CARDKEY_MASTER_KEYS`, versioned, newest first) wrap one data key per merchant; each card
key is padded to a multiple of 64 bytes (so its ciphertext does not tell its length) and sealed with
AES-256-GCM under its merchant's data key, a fresh 96-bit nonce, and associated data naming its product
and fingerprint, so a ciphertext copied onto another row does not open. Duplicates are found by an HMAC
of the normalised key under the merchant's own index key (derived from `CARDKEY_INDEX_KEY`), so two
merchants holding the same key get different fingerprints; nothing is decrypted for that.

Ciphertext formats: `0x02 || nonce || AES-GCM(pad(key))` (the format byte is in the associated data);
keys sealed before padding are `nonce || AES-GCM(key)` and still open.
"""

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core import crypto as core_crypto
from core.crypto import NONCE_BYTES

# One error type for every sealing failure, whichever layer raised it.
CardKeyCryptoError = core_crypto.CryptoError
master_keys = core_crypto.master_keys

PADDED_FORMAT = b"\x02"


def _data_key_aad(merchant_pk: int) -> bytes:
    return f"cardshop:data-key:merchant:{merchant_pk}".encode()


def data_key_generate() -> bytes:
    return core_crypto.data_key_generate()


def data_key_wrap(*, data_key: bytes, merchant_pk: int) -> tuple[str, bytes]:
    """Seal a merchant's data key under the newest master key; returns (master version, sealed)."""
    return core_crypto.data_key_wrap(data_key=data_key, associated_data=_data_key_aad(merchant_pk))


def data_key_unwrap(*, version: str, wrapped: bytes, merchant_pk: int) -> bytes:
    return core_crypto.data_key_unwrap(
        version=version,
        wrapped=wrapped,
        associated_data=_data_key_aad(merchant_pk),
        owner=f"the data key of merchant {merchant_pk}",
    )


def merchant_data_key(merchant) -> bytes:
    """The merchant's data key (`merchant` is a Merchant row, or anything with its three fields)."""
    return data_key_unwrap(
        version=merchant.data_key_version, wrapped=merchant.data_key_wrapped, merchant_pk=merchant.pk
    )


def data_key_seal(*, merchant, plaintext: bytes, aad: bytes) -> bytes:
    """Seal another of the merchant's secrets (a payout account number) under their data key."""
    return core_crypto.aead_seal(key=merchant_data_key(merchant), plaintext=plaintext, associated_data=aad)


def data_key_open(*, merchant, sealed: bytes, aad: bytes) -> bytes:
    try:
        return core_crypto.aead_open(key=merchant_data_key(merchant), sealed=sealed, associated_data=aad)
    except InvalidTag as error:
        raise CardKeyCryptoError(
            f"A secret of merchant {merchant.pk} does not open: wrong data key or moved ciphertext."
        ) from error


def merchant_index_key(merchant_pk: int) -> bytes:
    """The merchant's own key for fingerprints: the same card key gets another fingerprint elsewhere."""
    return core_crypto.index_subkey(b"cardshop:card-key-index:merchant:%d" % merchant_pk)


def normalise(raw: str) -> str:
    """The form duplicates are compared in: trimmed at both ends, inner whitespace kept."""
    return raw.strip()


def fingerprint(normalised: str, *, merchant_pk: int) -> bytes:
    return hmac.new(merchant_index_key(merchant_pk), normalised.encode(), hashlib.sha256).digest()


def card_key_aad(*, product_pk: int, fingerprint: bytes) -> bytes:
    return b"cardshop:card-key:product:%d:" % product_pk + fingerprint


def card_key_seal(*, data_key: bytes, plaintext: str, aad: bytes) -> bytes:
    return PADDED_FORMAT + core_crypto.aead_seal(
        key=data_key, plaintext=core_crypto.pad(plaintext.encode()), associated_data=PADDED_FORMAT + aad
    )


def card_key_open(*, data_key: bytes, sealed: bytes, aad: bytes) -> str:
    sealed = bytes(sealed)
    aead = AESGCM(data_key)
    if sealed[:1] == PADDED_FORMAT:
        body = sealed[1:]
        try:
            return core_crypto.unpad(aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], PADDED_FORMAT + aad)).decode()
        except InvalidTag:
            # Maybe an unpadded key whose random nonce happens to start with the format byte: try that.
            pass
    try:
        return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad).decode()
    except InvalidTag as error:
        raise CardKeyCryptoError("A card key does not open: wrong data key or moved ciphertext.") from error


class CardKeySealer:
    """Seals many keys of one product under one data key: the AESGCM and HMAC keys are set up once.

    Bulk imports use this; it produces exactly what `fingerprint` and `card_key_seal` produce.
    """

    def __init__(self, *, data_key: bytes, merchant_pk: int, product_pk: int):
        self._aead = AESGCM(data_key)
        self._index = hmac.new(merchant_index_key(merchant_pk), digestmod=hashlib.sha256)
        self._aad_prefix = PADDED_FORMAT + b"cardshop:card-key:product:%d:" % product_pk

    def fingerprint(self, normalised: str) -> bytes:
        mac = self._index.copy()
        mac.update(normalised.encode())
        return mac.digest()

    def seal(self, normalised: str, fingerprint: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        padded = core_crypto.pad(normalised.encode())
        return PADDED_FORMAT + nonce + self._aead.encrypt(nonce, padded, self._aad_prefix + fingerprint)
