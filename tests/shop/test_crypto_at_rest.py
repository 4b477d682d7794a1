"""Keys at rest: master-key rotation, a wrong master key, racing uploads, and what a database dump holds."""

import base64
import os
import subprocess
import threading

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from shop import crypto, services
from shop.models import CardKey, Merchant, StockUpload, StockUploadSource
from tests import factories
from tests.conftest import requires_postgres
from tests.shop.helpers import plaintext_keys, upload


def _new_master() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.mark.django_db
def test_rotation_rewraps_data_keys_and_every_key_still_decrypts(settings, capsys):
    products = [factories.product_create(stock=0) for _ in range(3)]
    for number, product in enumerate(products):
        upload(product, "\n".join(f"ROT-{number}-{i}" for i in range(50)).encode())
    sealed_before = dict(CardKey.objects.values_list("pk", "sealed"))
    old_spec = settings.CARDKEY_MASTER_KEYS

    settings.CARDKEY_MASTER_KEYS = f"rotated:{_new_master()},{old_spec}"
    call_command("rotate_master_key")
    settings.CARDKEY_MASTER_KEYS = settings.CARDKEY_MASTER_KEYS.split(",")[0]  # the old key is gone

    assert "3 re-wrapped" in capsys.readouterr().out
    assert set(Merchant.objects.values_list("data_key_version", flat=True)) == {"rotated"}
    assert {pk: bytes(v) for pk, v in CardKey.objects.values_list("pk", "sealed")} == {
        pk: bytes(v) for pk, v in sealed_before.items()
    }  # card-key rows untouched
    for number, product in enumerate(products):
        assert plaintext_keys(product) == sorted(f"ROT-{number}-{i}" for i in range(50))


@pytest.mark.django_db
def test_rotation_with_a_missing_old_key_changes_nothing_and_says_why(settings):
    factories.product_create(stock=2)
    before = list(Merchant.objects.values_list("data_key_version", "data_key_wrapped"))
    settings.CARDKEY_MASTER_KEYS = f"v9:{_new_master()}"

    with pytest.raises(Exception, match="not in CARDKEY_MASTER_KEYS"):
        call_command("rotate_master_key")
    assert list(Merchant.objects.values_list("data_key_version", "data_key_wrapped")) == before


@pytest.mark.django_db
def test_with_a_wrong_master_key_nothing_decrypts_and_the_error_says_so(settings):
    product = factories.product_create(stock=0)
    upload(product, b"SECRET-1\nSECRET-2\n")
    version = product.merchant.data_key_version
    settings.CARDKEY_MASTER_KEYS = f"{version}:{_new_master()}"  # same name, other bytes

    with pytest.raises(crypto.CardKeyCryptoError, match="wrong master key"):
        plaintext_keys(product)
    failed = upload(product, b"NEW-1\n")  # an import cannot seal either: it fails and says why
    assert failed.status == "failed"
    assert "wrong master key" in failed.error
    assert CardKey.objects.filter(product=product).count() == 2


@pytest.mark.django_db
def test_a_ciphertext_moved_to_another_product_does_not_open():
    product = factories.product_create(stock=0)
    other = factories.product_create(merchant=product.merchant, stock=0)
    upload(product, b"MOVED\n")
    CardKey.objects.filter(product=product).update(product=other)

    with pytest.raises(crypto.CardKeyCryptoError):
        plaintext_keys(other)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_racing_uploads_of_overlapping_files_leave_each_key_once(settings):
    """Two uploads, each in its own thread with its own connection, overlap by 3,000 keys; batches of
    500 interleave. The unique constraint decides: every key exists exactly once and the counts agree."""
    settings.SHOP_STOCK_UPLOAD_BATCH = 500
    product = factories.product_create(stock=0)
    files = {
        "a": "\n".join(f"RACE-{i:05d}" for i in range(0, 6000)).encode(),
        "b": "\n".join(f"RACE-{i:05d}" for i in reversed(range(3000, 9000))).encode(),
    }
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            started = services.stock_upload_start(
                merchant=product.merchant,
                product_pk=product.pk,
                chunks=[files[name]],
                source=StockUploadSource.PASTE,
                actor=None,
                now=timezone.now(),
                original_name=name,
            )
            barrier.wait(timeout=30)  # both uploads exist; now both import at once
            services.stock_upload_process(upload_pk=started.pk, now=timezone.now())
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connections.close_all()

    with _no_task_queueing():
        threads = [threading.Thread(target=run, args=(name,)) for name in files]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert errors == []
    uploads = list(StockUpload.objects.order_by("pk"))
    assert [u.status for u in uploads] == ["done", "done"]
    assert CardKey.objects.filter(product=product).count() == 9000
    assert sum(u.imported for u in uploads) == 9000
    assert sum(u.duplicates for u in uploads) == 3000
    assert all(u.imported + u.duplicates == u.total == 6000 for u in uploads)
    assert len(plaintext_keys(product)) == len(set(plaintext_keys(product))) == 9000


class _no_task_queueing:
    """Swap the task's `delay` for a no-op: the threads run the service themselves, at the same moment."""

    def __enter__(self):
        from shop.tasks import stock_upload_process_task

        self.task = stock_upload_process_task
        self.task.delay, self.original = (lambda **kwargs: None), self.task.delay
        return self

    def __exit__(self, *exc):
        self.task.delay = self.original


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_dump_holds_no_plaintext_key(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    product = factories.product_create(stock=0)
    keys = [f"PLAINTEXT-CANARY-{i:04d}-卡密" for i in range(200)]
    done = upload(product, "\n".join(keys).encode("utf-8"))
    services.keys_import_batch(product=product, keys=["PLAINTEXT-CANARY-SEEDED"], now=timezone.now())
    assert done.imported == 200

    db = connection.settings_dict
    dump = subprocess.run(
        ["pg_dump", "-h", db.get("HOST") or "127.0.0.1", "-U", db.get("USER") or "postgres", db["NAME"]],
        capture_output=True,
        check=True,
        env={**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""},
    ).stdout.decode("utf-8", "replace")

    assert "COPY public.shop_cardkey" in dump
    assert "PLAINTEXT-CANARY" not in dump
    assert "CANARY" not in dump.upper()
    assert list((tmp_path / "stock-uploads").iterdir()) == []  # nor is the uploaded file kept


def _pg_dump() -> str:
    db = connection.settings_dict
    return subprocess.run(
        ["pg_dump", "-h", db.get("HOST") or "127.0.0.1", "-U", db.get("USER") or "postgres", db["NAME"]],
        capture_output=True,
        check=True,
        env={**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""},
    ).stdout.decode("utf-8", "replace")


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_dump_holds_no_second_factor_secret_nor_payout_account_number():
    """A dump alone must not pass anyone's second factor (TOTP seed, backup codes) nor show where a
    merchant is paid."""
    from accounts import services as accounts_services

    now = timezone.now()
    merchant = factories.merchant_create()
    device = accounts_services.totp_device_provision_unchecked(user=merchant.user, now=now)
    seed = device.bin_key
    codes = accounts_services.backup_codes_issue_unchecked(user=merchant.user, count=10, now=now)
    factories.payout_account_create(merchant=merchant)  # account number 6222000011112222

    dump = _pg_dump()

    assert "COPY public.escrow_payoutaccount" in dump
    seed_hex, seed_b32 = seed.hex(), base64.b32encode(seed).decode()
    for shown in (seed_hex, seed_hex.upper(), seed_b32, seed_b32.lower()):
        assert shown not in dump
    for code in codes:
        assert code not in dump.lower()
    assert "62220000111" not in dump  # neither the number nor most of it


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_dump_tells_neither_a_key_length_nor_which_merchants_hold_the_same_key():
    now = timezone.now()
    products = [factories.product_create(stock=0) for _ in range(2)]  # two merchants
    for product in products:
        services.keys_import_batch(product=product, keys=["SHARED-KEY-HELD-BY-TWO-MERCHANTS"], now=now)
    for key in ("A" * 5, "B" * 30):
        services.keys_import_batch(product=products[0], keys=[key], now=now)

    dump = _pg_dump()

    assert "COPY public.shop_cardkey" in dump
    rows = list(CardKey.objects.filter(product__in=products).order_by("pk").values_list("fingerprint", "sealed"))
    (shared_here, _), (shared_there, _), (_, sealed_short), (_, sealed_long) = rows
    assert bytes(shared_here).hex() in dump and bytes(shared_there).hex() in dump
    assert bytes(shared_here) != bytes(shared_there)
    assert len(bytes(sealed_short)) == len(bytes(sealed_long))
    assert plaintext_keys(products[0]) == ["A" * 5, "B" * 30, "SHARED-KEY-HELD-BY-TWO-MERCHANTS"]
    # Duplicate detection within one merchant still works.
    assert services.keys_import_batch(product=products[1], keys=[" SHARED-KEY-HELD-BY-TWO-MERCHANTS "], now=now) == (
        services.ImportCounts(imported=0, duplicates=1)
    )


@pytest.mark.django_db
def test_a_key_sealed_before_padding_still_opens_even_if_its_nonce_starts_like_the_new_format():
    """Rows written before padding are `nonce || AES-GCM(key)`; one in 256 of their random nonces
    starts with the padded format's byte, and must still open."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    product = factories.product_create(stock=0)
    services.keys_import_batch(product=product, keys=["OLD-STYLE-1", "OLD-STYLE-2"], now=timezone.now())
    data_key = services.merchant_data_key(product.merchant)
    for nonce_start, key in zip(
        (b"\x02", b"\x07"), CardKey.objects.filter(product=product).order_by("pk"), strict=True
    ):
        plaintext = crypto.card_key_open(
            data_key=data_key,
            sealed=key.sealed,
            aad=crypto.card_key_aad(product_pk=product.pk, fingerprint=bytes(key.fingerprint)),
        )
        nonce = nonce_start + os.urandom(11)
        aad = crypto.card_key_aad(product_pk=product.pk, fingerprint=bytes(key.fingerprint))
        legacy = nonce + AESGCM(data_key).encrypt(nonce, plaintext.encode(), aad)
        CardKey.objects.filter(pk=key.pk).update(sealed=legacy)  # as the previous release wrote it

    assert plaintext_keys(product) == ["OLD-STYLE-1", "OLD-STYLE-2"]
