"""The migrations that take secrets out of plaintext lose nothing: from rows as the previous release
wrote them (shared-index fingerprints, unpadded card keys, django-otp devices, plaintext payout numbers)
to the same keys, seeds, codes and numbers, now sealed or hashed."""

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from core import crypto
from tests.conftest import requires_postgres

BEFORE = [
    ("accounts", "0002_alert"),
    ("shop", "0003_card_key_upload_without_constraint"),
    ("escrow", "0003_liabilitypublication_alter_ledgeraccount_kind_and_more"),
]
SHARED_KEY = "KEY-HELD-BY-BOTH"


def _legacy_card_key(data_key: bytes, product_pk: int, key: str) -> tuple[bytes, bytes]:
    """(fingerprint, sealed) as written before: one index key for all merchants, no padding."""
    fingerprint = hmac.new(crypto.index_key(), key.encode(), hashlib.sha256).digest()
    nonce = os.urandom(12)
    aad = b"cardshop:card-key:product:%d:" % product_pk + fingerprint
    return fingerprint, nonce + AESGCM(data_key).encrypt(nonce, key.encode(), aad)


def _old_rows(apps) -> dict:
    now = timezone.now()
    User = apps.get_model("accounts", "User")
    Merchant = apps.get_model("shop", "Merchant")
    Product = apps.get_model("shop", "Product")
    CardKey = apps.get_model("shop", "CardKey")
    made = {"keys": {}}
    for number in range(2):
        user = User.objects.create(username=f"migrated{number}")
        merchant = Merchant.objects.create(
            user=user, name=f"m{number}", created_at=now, data_key_version="", data_key_wrapped=b""
        )
        data_key = crypto.data_key_generate()
        aad = f"cardshop:data-key:merchant:{merchant.pk}".encode()
        merchant.data_key_version, merchant.data_key_wrapped = crypto.data_key_wrap(
            data_key=data_key, associated_data=aad
        )
        merchant.save()
        product = Product.objects.create(merchant=merchant, title="p", price=100, currency="CNY", created_at=now)
        keys = [SHARED_KEY, *(f"OWN-{number}-{i}" * (i + 1) for i in range(30))]
        for key in keys:
            fingerprint, sealed = _legacy_card_key(data_key, product.pk, key)
            CardKey.objects.create(
                product=product, merchant=merchant, fingerprint=fingerprint, sealed=sealed, created_at=now
            )
        made["keys"][product.pk] = sorted(keys)
    user = User.objects.get(username="migrated0")
    made["user_pk"], made["merchant_pk"] = user.pk, Merchant.objects.get(user=user).pk
    made["seed"] = os.urandom(20)
    apps.get_model("otp_totp", "TOTPDevice").objects.create(
        user=user, name="authenticator", confirmed=True, key=made["seed"].hex(), last_t=7
    )
    static = apps.get_model("otp_static", "StaticDevice").objects.create(user=user, name="backup", confirmed=True)
    made["codes"] = ["abcd2345", "efgh6723"]
    for code in made["codes"]:
        apps.get_model("otp_static", "StaticToken").objects.create(device=static, token=code)
    apps.get_model("escrow", "PayoutAccount").objects.create(
        merchant_id=made["merchant_pk"],
        label="Main",
        holder_name="Li",
        account_number="6222000099998888",
        provider="ICBC",
        created_at=now,
    )
    return made


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_the_migrations_reseal_every_secret_and_lose_nothing():
    from accounts import services as accounts_services
    from accounts.models import AuthenticatorDevice, User
    from escrow.models import PayoutAccount
    from shop import crypto as shop_crypto
    from shop import selectors
    from shop.models import CardKey, Product

    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(BEFORE)
    otp_plugins = [("otp_totp", "0003_add_timestamps"), ("otp_static", "0003_add_timestamps")]
    made = _old_rows(executor.loader.project_state([*BEFORE, *otp_plugins]).apps)
    executor.loader.build_graph()
    executor.migrate(latest)

    for product_pk, keys in made["keys"].items():
        product = Product.objects.select_related("merchant").get(pk=product_pk)
        assert sorted(key for _pk, key, _at in selectors.product_unsold_keys_plaintext(product=product)) == keys
        fingerprints = set(CardKey.objects.filter(product=product).values_list("fingerprint", flat=True))
        assert {bytes(fp) for fp in fingerprints} == {
            shop_crypto.fingerprint(key, merchant_pk=product.merchant_id) for key in keys
        }
    shared = [shop_crypto.fingerprint(SHARED_KEY, merchant_pk=p.merchant_id) for p in Product.objects.all()]
    assert len(set(shared)) == 2
    # Padded: format byte, nonce and tag around whole 64-byte blocks.
    assert {(len(bytes(s)) - 1 - 12 - 16) % 64 for s in CardKey.objects.values_list("sealed", flat=True)} == {0}

    user = User.objects.get(pk=made["user_pk"])
    device = AuthenticatorDevice.objects.get(user=user)
    assert (device.bin_key, device.last_t, device.confirmed) == (made["seed"], 7, True)
    assert accounts_services.backup_codes_unused(user=user, codes=made["codes"]) == made["codes"]
    with connection.cursor() as cursor:
        for table in ("otp_totp_totpdevice", "otp_static_statictoken", "otp_static_staticdevice"):
            cursor.execute(f"SELECT count(*) FROM {table}")
            assert cursor.fetchone() == (0,), table
    account = PayoutAccount.objects.get(merchant_id=made["merchant_pk"])
    assert (account.number_plaintext(), account.number_last4) == ("6222000099998888", "8888")
