"""Stock files stream entry by entry: one line of many keys costs no more memory than many short lines,
and the limit on keys holds however they are laid out in lines."""

import tracemalloc

import pytest
from django.utils import timezone

from shop import crypto, services, stock_files
from shop.models import CardKey, StockUpload, StockUploadSource
from shop.services import uploads
from shop.stock_files import Entry, StockFileError
from tests import factories
from tests.shop.helpers import plaintext_keys, upload

pytestmark = pytest.mark.django_db

CHINESE = ["充值卡-甲-0001", "充值卡-乙-0002", "点卡 卡号123 密码456"]


@pytest.fixture
def product():
    return factories.product_create(stock=0, low_stock_threshold=0)


def _places(done: StockUpload) -> list[tuple[int, int, str]]:
    return list(done.rejections.order_by("line", "entry").values_list("line", "entry", "reason"))


def _one_line_file(tmp_path, entries: int):
    path = tmp_path / f"one-line-{entries}.csv"
    with open(path, "wb") as out:
        for number in range(entries):
            out.write(b"%s%032d" % (b"," if number else b"", number))
    return path


def _peak_bytes_parsing(path) -> int:
    tracemalloc.start()
    try:
        info = stock_files.inspect(path, delimiter="comma", max_entries=10_000_000)
        entries = sum(1 for _entry in stock_files.iter_entries(path, encoding=info.encoding, delimiter="comma"))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entries == info.entries and info.lines == 1
    return peak


def test_one_line_of_many_entries_is_parsed_in_flat_memory(tmp_path):
    small = _peak_bytes_parsing(_one_line_file(tmp_path, 20_000))
    large = _peak_bytes_parsing(_one_line_file(tmp_path, 200_000))  # 6.6 MB on one line

    assert large < 20 * 1024 * 1024
    assert large < 2 * small  # ten times the entries, not ten times the memory


def test_the_key_limit_counts_entries_not_lines(product, settings):
    settings.SHOP_STOCK_UPLOAD_MAX_LINES = 3

    with pytest.raises(StockFileError) as refused:
        upload(product, b"A,B,C,D", delimiter="comma")

    assert refused.value.code == "too_many_lines"
    assert "more than 3 keys" in str(refused.value)
    assert not StockUpload.objects.exists() and not CardKey.objects.exists()
    assert upload(product, b"A,B\nC", delimiter="comma").imported == 3  # at the limit is fine


def test_a_one_line_file_reports_line_1_and_the_entry(product, client):
    done = upload(product, b"A,,B,A," + b"X" * 1025 + b",C", delimiter="comma")

    assert (done.total, done.imported, done.duplicates, done.rejected) == (6, 3, 1, 2)
    assert _places(done) == [(1, 2, "empty"), (1, 4, "duplicate_in_file"), (1, 5, "too_long")]
    assert plaintext_keys(product) == ["A", "B", "C"]


def test_the_rejected_entries_report_says_where_on_the_line(product, client):
    done = upload(product, b"A,,A\nB", delimiter="comma")
    factories.login_verified(client, product.merchant.user)

    report = client.get(f"/merchant/uploads/{done.pk}/rejected.csv")

    assert b"".join(report.streaming_content).decode().splitlines() == [
        "line,reason,explanation,entry",
        "1,empty,Empty,2",
        "1,duplicate_in_file,Duplicate in the file,3",
    ]


def test_an_entry_too_long_to_hold_is_rejected_not_kept(product):
    huge = b"X" * (stock_files.ENTRY_MAX_CHARS * 3)

    done = upload(product, b"KEY-1\n" + huge + b"\n   " + huge + b"  \nKEY-2")

    assert _places(done) == [(2, 1, "too_long"), (3, 1, "too_long")]
    assert plaintext_keys(product) == ["KEY-1", "KEY-2"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
@pytest.mark.parametrize(
    ("data", "delimiter"),
    [
        (("\r\n".join(CHINESE) + "\r\n").encode("gb18030"), "newline"),
        ("\r".join(CHINESE).encode("utf-8-sig"), "newline"),
        ("\r\n".join(CHINESE).encode("utf-8-sig"), "newline"),
        (("|".join(CHINESE) + "\r\n").encode("gbk"), "pipe"),
        ((CHINESE[0] + ",\r\n" + ",".join(CHINESE[1:]) + "\r\n").encode("utf-8"), "comma"),
    ],
    ids=["gb18030-crlf", "bom-cr", "bom-crlf", "gbk-pipe", "utf8-comma-crlf"],
)
def test_chunk_boundaries_cut_nothing(product, monkeypatch, chunk, data, delimiter):
    # Chunks of a few bytes split CRLF pairs, BOMs and multi-byte characters every way they can be split.
    monkeypatch.setattr(stock_files, "READ_CHUNK", chunk)

    done = upload(product, data, delimiter=delimiter)

    assert plaintext_keys(product) == sorted(CHINESE)
    assert done.imported == 3
    assert done.total - done.rejected == 3  # no entry lost or made up at a boundary
    assert done.processed == done.total


@pytest.mark.parametrize("chunk", [1, 4, 1 << 16])
@pytest.mark.parametrize(
    ("data", "delimiter", "lines", "entries"),
    [
        (b"A\nB", "newline", 2, 2),
        (b"A\nB\n", "newline", 2, 2),
        (b"A\n\n\nB\r\n\r\n", "newline", 5, 5),
        (b"A,B,\n,C", "comma", 2, 5),
        (b"A,,\r\n", "comma", 1, 3),
        (b"A,", "comma", 1, 2),
        (b"\xef\xbb\xbfA|B\rC|", "pipe", 2, 4),
    ],
)
def test_the_count_checked_before_import_is_what_the_import_reads(
    tmp_path, monkeypatch, chunk, data, delimiter, lines, entries
):
    monkeypatch.setattr(stock_files, "READ_CHUNK", chunk)
    path = tmp_path / "keys.txt"
    path.write_bytes(data)

    info = stock_files.inspect(path, delimiter=delimiter, max_entries=100)
    read = list(stock_files.iter_entries(path, encoding=info.encoding, delimiter=delimiter))

    assert (info.lines, info.entries) == (lines, entries)
    assert (read[-1].line, len(read)) == (lines, entries)


def test_a_run_that_stopped_mid_line_resumes_at_the_next_entry(product, settings):
    settings.SHOP_STOCK_UPLOAD_BATCH = 2
    started = services.stock_upload_start(
        merchant=product.merchant,
        product_pk=product.pk,
        chunks=[b"A,B,C,A,E"],
        source=StockUploadSource.PASTE,
        delimiter="comma",
        actor=None,
        now=timezone.now(),
    )
    sealer = crypto.CardKeySealer(
        data_key=services.merchant_data_key(product.merchant), merchant_pk=product.merchant_id, product_pk=product.pk
    )
    # What a worker killed after its first batch leaves behind: two keys and the counters, committed.
    uploads._stock_upload_batch_write(
        upload=started, sealer=sealer, entries=[Entry(1, 1, "A"), Entry(1, 2, "B")], entries_from=0, now=timezone.now()
    )
    with pytest.raises(services.StockUploadTakenOver):  # a second run still at the start stops itself
        uploads._stock_upload_batch_write(
            upload=started, sealer=sealer, entries=[Entry(1, 1, "A")], entries_from=0, now=timezone.now()
        )
    done = services.stock_upload_process(upload_pk=started.pk, now=timezone.now())

    assert (done.status, done.processed, done.imported, done.duplicates) == ("done", 5, 4, 1)
    assert _places(done) == [(1, 4, "duplicate_in_file")]
    assert plaintext_keys(product) == ["A", "B", "C", "E"]
