"""Stock uploads through the real services: encodings, delimiters, duplicates, rejections, limits."""

import pytest
from django.utils import timezone

from shop import services
from shop.models import CardKey, StockUpload, StockUploadSource
from shop.services import uploads
from shop.stock_files import Entry, StockFileError
from tests import factories
from tests.shop.helpers import plaintext_keys, rejections, upload

pytestmark = pytest.mark.django_db

CHINESE = ["充值卡-甲-0001", "充值卡-乙-0002", "点卡 卡号123 密码456"]


@pytest.fixture
def product():
    return factories.product_create(stock=0, low_stock_threshold=0)


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("utf-8", "\n".join(CHINESE).encode("utf-8")),
        ("utf-8-sig", "\n".join(CHINESE).encode("utf-8-sig")),
        ("gb18030", "\n".join(CHINESE).encode("gb18030")),
        ("gbk", "\n".join(CHINESE).encode("gbk")),
        ("crlf", ("\r\n".join(CHINESE) + "\r\n").encode("gbk")),
        ("cr", "\r".join(CHINESE).encode("utf-8")),
    ],
)
def test_each_encoding_reads_every_key_exactly(product, encoding, data):
    done = upload(product, data)

    assert done.status == "done"
    assert (done.total, done.processed, done.imported, done.duplicates, done.rejected) == (3, 3, 3, 0, 0)
    assert plaintext_keys(product) == sorted(CHINESE)  # no BOM, no \r, inner spaces kept


@pytest.mark.parametrize(
    ("delimiter", "text"),
    [
        ("comma", "AAA-1,BBB-2\nCCC-3"),
        ("semicolon", "AAA-1;BBB-2;CCC-3"),
        ("tab", "AAA-1\tBBB-2\r\nCCC-3\r\n"),
        ("pipe", "AAA-1|BBB-2|CCC-3\n"),
    ],
)
def test_each_delimiter_splits_entries(product, delimiter, text):
    done = upload(product, text.encode(), delimiter=delimiter)

    assert (done.total, done.imported) == (3, 3)
    assert plaintext_keys(product) == ["AAA-1", "BBB-2", "CCC-3"]


def test_card_number_and_pin_on_one_line_stay_one_key(product):
    done = upload(product, b"6225 0000 1111 2222  PIN 1234\n  6225000011113333,9876  \n", name="pairs.csv")

    assert done.imported == 2
    assert plaintext_keys(product) == ["6225 0000 1111 2222  PIN 1234", "6225000011113333,9876"]


def test_every_rejection_reason_with_line_numbers(product, settings):
    factories_key = "EXISTING-KEY"
    services.keys_import_batch(product=product, keys=[factories_key], now=timezone.now())
    lines = ["GOOD-1", "", "   ", "X" * 1025, "GOOD-1", "EXISTING-KEY", "X" * 1024, "GOOD-2"]

    done = upload(product, "\n".join(lines).encode())

    assert (done.total, done.processed) == (8, 8)
    assert (done.imported, done.duplicates, done.rejected) == (3, 2, 3)
    assert rejections(done) == [
        (2, "empty"),
        (3, "empty"),
        (4, "too_long"),
        (5, "duplicate_in_file"),
        (6, "duplicate_existing"),
    ]
    assert CardKey.objects.filter(product=product).count() == 4


def test_duplicates_across_batches_of_one_file_are_in_file_not_existing(product, settings):
    settings.SHOP_STOCK_UPLOAD_BATCH = 2
    done = upload(product, b"A\nB\nC\nA\nD\nB\n")

    assert (done.imported, done.duplicates) == (4, 2)
    assert rejections(done) == [(4, "duplicate_in_file"), (6, "duplicate_in_file")]


def test_second_upload_of_same_keys_imports_nothing(product):
    upload(product, b"K1\nK2\nK3\n")
    again = upload(product, b"K1\nK2\nK3\nK4\n")

    assert (again.imported, again.duplicates) == (1, 3)
    assert {reason for _line, reason in rejections(again)} == {"duplicate_existing"}
    assert CardKey.objects.filter(product=product).count() == 4


def test_same_key_on_another_product_of_the_merchant_is_a_duplicate(product):
    other = factories.product_create(merchant=product.merchant, stock=0)
    upload(product, b"SHARED\n")
    done = upload(other, b"SHARED\n")

    assert (done.imported, done.duplicates) == (0, 1)


def test_another_merchant_may_hold_the_same_key(product):
    other = factories.product_create(stock=0)
    upload(product, b"SHARED\n")

    assert upload(other, b"SHARED\n").imported == 1


@pytest.mark.parametrize(
    ("data", "name", "code"),
    [
        (b"", "keys.txt", "empty_file"),
        (b"\n  \n\r\n", "keys.txt", "empty_file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "keys.txt", "binary_file"),
        (b"KEY-1\nKEY\x00-2\n", "keys.txt", "binary_file"),
        (bytes([0xFF, 0xFE, 0x80, 0x81, 0xFF]) * 10, "keys.txt", "not_text"),
        (b"KEY-1\n", "keys.exe", "invalid_file_type"),
    ],
)
def test_bad_files_are_refused_and_import_nothing(product, data, name, code):
    with pytest.raises(StockFileError) as refused:
        upload(product, data, name=name)

    assert refused.value.code == code
    assert str(refused.value)
    assert not StockUpload.objects.exists()
    assert not CardKey.objects.exists()


def test_limits_on_size_and_lines(product, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.SHOP_STOCK_UPLOAD_MAX_LINES = 3
    with pytest.raises(StockFileError) as too_many:
        upload(product, b"A\nB\nC\nD\n")
    settings.SHOP_STOCK_UPLOAD_MAX_BYTES = 10
    with pytest.raises(StockFileError) as too_large:
        upload(product, b"A\nB\nC23456789\n")

    assert (too_many.value.code, too_large.value.code) == ("too_many_lines", "too_large")
    assert not StockUpload.objects.exists() and not CardKey.objects.exists()
    assert list((tmp_path / "stock-uploads").iterdir()) == []  # refused files are not kept


def test_someone_elses_product_is_not_found_and_nothing_is_imported(product):
    intruder = factories.merchant_create(name="Intruder")

    with pytest.raises(services.ShopError) as refused:
        services.stock_upload_start(
            merchant=intruder,
            product_pk=product.pk,
            chunks=[b"K\n"],
            source=StockUploadSource.PASTE,
            actor=intruder.user,
            now=timezone.now(),
        )

    assert refused.value.code == "not_found"
    assert not StockUpload.objects.exists() and not CardKey.objects.exists()


def test_running_the_task_twice_imports_once(product, settings):
    settings.SHOP_STOCK_UPLOAD_BATCH = 2
    done = upload(product, b"A\nB\nC\nD\nE\n")
    services.stock_upload_process(upload_pk=done.pk, now=timezone.now())
    done.refresh_from_db()

    assert (done.processed, done.imported, done.duplicates) == (5, 5, 0)


def test_a_run_that_stopped_half_way_resumes_after_its_last_batch(product, settings):
    settings.SHOP_STOCK_UPLOAD_BATCH = 2
    started = services.stock_upload_start(
        merchant=product.merchant,
        product_pk=product.pk,
        chunks=[b"A\nB\nC\nD\nE\n"],
        source=StockUploadSource.PASTE,
        actor=None,
        now=timezone.now(),
    )
    # What a worker killed after its first batch leaves behind: two keys and the counters, committed.
    services.keys_import_batch(product=product, keys=[], now=timezone.now())
    uploads._stock_upload_batch_write(
        upload=started,
        sealer=_sealer(product),
        entries=[Entry(1, 1, "A"), Entry(2, 1, "B")],
        entries_from=0,
        now=timezone.now(),
    )
    done = services.stock_upload_process(upload_pk=started.pk, now=timezone.now())

    assert (done.status, done.processed, done.imported, done.duplicates) == ("done", 5, 5, 0)
    assert plaintext_keys(product) == ["A", "B", "C", "D", "E"]


def _sealer(product):
    from shop import crypto

    return crypto.CardKeySealer(
        data_key=services.merchant_data_key(product.merchant), merchant_pk=product.merchant_id, product_pk=product.pk
    )


def test_the_file_is_deleted_once_imported(product, settings, tmp_path, django_capture_on_commit_callbacks):
    settings.MEDIA_ROOT = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        done = upload(product, b"K1\nK2\n")

    assert done.status == "done"
    assert list((tmp_path / "stock-uploads").iterdir()) == []
