"""Re-key every card key: its fingerprint under the merchant's own index key, its plaintext padded.

Fingerprints used to be an HMAC under one index key shared by all merchants, so a dump showed which
merchants hold the same key; now each merchant has its own (HKDF of CARDKEY_INDEX_KEY, info = merchant).
The fingerprint is part of each ciphertext's associated data, so every key is opened with its merchant's
data key (the master keys come from the settings, as at run time) and sealed again, padded, under the
same data key. Self-contained on purpose: it uses only core/crypto.py's primitives, not shop/crypto.py,
which may change after this migration. Runs in one transaction: a key that does not open (a master
key missing from CARDKEY_MASTER_KEYS) stops it with the reason, and nothing changes.
"""

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.db import migrations

from core import crypto

PADDED = b"\x02"
NONCE = crypto.NONCE_BYTES


def _aad(product_pk, fingerprint):
    return b"cardshop:card-key:product:%d:" % product_pk + fingerprint


def _open_legacy(aead, sealed, aad):
    return aead.decrypt(sealed[:NONCE], sealed[NONCE:], aad)


def _open_padded(aead, sealed, aad):
    body = sealed[1:]
    return crypto.unpad(aead.decrypt(body[:NONCE], body[NONCE:], PADDED + aad))


def _rekey(apps, schema_editor, *, forward):
    Merchant = apps.get_model("shop", "Merchant")
    CardKey = apps.get_model("shop", "CardKey")
    shared_index = crypto.index_key()
    for merchant in Merchant.objects.order_by("pk"):
        keys = CardKey.objects.filter(merchant_id=merchant.pk).order_by("pk")
        if not keys.exists():
            continue
        data_key = crypto.data_key_unwrap(
            version=merchant.data_key_version,
            wrapped=merchant.data_key_wrapped,
            associated_data=f"cardshop:data-key:merchant:{merchant.pk}".encode(),
            owner=f"the data key of merchant {merchant.pk}",
        )
        aead = AESGCM(data_key)
        own_index = crypto.index_subkey(b"cardshop:card-key-index:merchant:%d" % merchant.pk)
        changed = []
        for key in keys.only("pk", "product_id", "fingerprint", "sealed").iterator(chunk_size=2000):
            sealed, aad = bytes(key.sealed), _aad(key.product_id, bytes(key.fingerprint))
            try:
                plaintext = _open_legacy(aead, sealed, aad) if forward else _open_padded(aead, sealed, aad)
            except InvalidTag as error:
                raise crypto.CryptoError(f"Card key {key.pk} of merchant {merchant.pk} does not open.") from error
            fingerprint = hmac.new(own_index if forward else shared_index, plaintext, hashlib.sha256).digest()
            new_aad = _aad(key.product_id, fingerprint)
            if forward:
                key.sealed = PADDED + crypto.aead_seal(
                    key=data_key, plaintext=crypto.pad(plaintext), associated_data=PADDED + new_aad
                )
            else:
                key.sealed = crypto.aead_seal(key=data_key, plaintext=plaintext, associated_data=new_aad)
            key.fingerprint = fingerprint
            changed.append(key)
        _write(CardKey, changed, schema_editor)


def _write(CardKey, changed, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        CardKey.objects.bulk_update(changed, ["fingerprint", "sealed"], batch_size=1000)
        return
    # One UPDATE … FROM (VALUES …) per 5,000 keys: bulk_update's CASE WHEN takes ~3 ms a key here.
    from psycopg2.extras import execute_values

    table = CardKey._meta.db_table
    with connection.cursor() as cursor:
        execute_values(
            cursor.cursor,
            f"UPDATE {table} AS k SET fingerprint = v.fingerprint, sealed = v.sealed "  # noqa: S608 - our table
            "FROM (VALUES %s) AS v (id, fingerprint, sealed) WHERE k.id = v.id",
            [(key.pk, key.fingerprint, key.sealed) for key in changed],
            template="(%s, %s::bytea, %s::bytea)",
            page_size=5000,
        )


def forwards(apps, schema_editor):
    _rekey(apps, schema_editor, forward=True)


def backwards(apps, schema_editor):
    _rekey(apps, schema_editor, forward=False)


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0003_card_key_upload_without_constraint"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
