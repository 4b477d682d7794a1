"""Reading merchants' stock files: limits, encodings and splitting them into entries. No database here.

Files come from suppliers' systems, often on Windows and in Chinese encodings. A file is read as UTF-8
(a BOM is dropped) and, if that fails, as GB18030 (a superset of GBK and GB2312); CRLF, LF and CR line
ends are all one line end. A file with a NUL byte, or one that is neither encoding, is not text.

Everything streams, entry by entry: the file is read `READ_CHUNK` bytes at a time and split on line ends
and the chosen delimiter as it goes, so a file that is one line of a million comma-separated keys costs
no more memory than a million short lines. A line is never split on whitespace (a card number and its
PIN on one line stay one key). An entry is never held past `ENTRY_MAX_CHARS`: it is far too long for a
key (`Entry.text` is then None).
"""

import codecs
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from django.utils.translation import gettext as _

from core.errors import Refused
from shop.models import DELIMITER_CHARACTERS, StockDelimiter

ENCODINGS = ("utf-8-sig", "gb18030")
READ_CHUNK = 1 << 16
ENTRY_MAX_CHARS = 1 << 16


class StockFileError(Refused, ValueError):
    """The upload cannot be imported; the message is for the merchant, `code` for the API."""


class Entry(NamedTuple):
    """One entry of a file: where it is (line, and its place on that line, from 1) and its raw text."""

    line: int
    number: int
    text: str | None  # None: longer than ENTRY_MAX_CHARS, so not kept


@dataclass(frozen=True)
class StockFileInfo:
    encoding: str
    lines: int
    entries: int


def write_limited(chunks: Iterable[bytes], path: Path, *, max_bytes: int) -> int:
    """Copy `chunks` into `path`, refusing (and removing the file) past `max_bytes`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    try:
        with open(path, "xb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise StockFileError(
                        _("The file is larger than %(mb)d MB.") % {"mb": max_bytes // (1024 * 1024)}, "too_large"
                    )
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return size


def inspect(path: Path, *, delimiter: str, max_entries: int) -> StockFileInfo:
    """Check a saved upload before anything is imported; raise `StockFileError` saying what is wrong."""
    if os.path.getsize(path) == 0:
        raise StockFileError(_("The file is empty."), "empty_file")
    separator = DELIMITER_CHARACTERS[StockDelimiter(delimiter)]
    for encoding in ENCODINGS:
        try:
            return _scan(path, encoding=encoding, separator=separator, max_entries=max_entries)
        except UnicodeDecodeError:
            continue
    raise StockFileError(
        _("This is not a text file in UTF-8 or GB18030/GBK; save it as text and try again."), "not_text"
    )


def _scan(path: Path, *, encoding: str, separator: str | None, max_entries: int) -> StockFileInfo:
    # Counts what `_split` would yield without building the entries (this runs in the web request): every
    # separator and line end ends an entry, and so does the end of a last line that has anything on it.
    ends = ("\n",) if separator is None else ("\n", separator)
    entries = lines = 0
    has_key = line_started = False
    for text in _text_only(_decoded_pieces(path, encoding)):
        entries += sum(text.count(end) for end in ends)
        lines += text.count("\n")
        line_started = not text.endswith("\n")
        has_key = has_key or bool(_strip_ends(text, ends).strip())
        if entries + line_started > max_entries:
            # The code is older than the rule: the limit was on lines, and is now on entries.
            raise StockFileError(
                _("The file has more than %(entries)s keys; split it into smaller files.")
                % {"entries": f"{max_entries:,}"},
                "too_many_lines",
            )
    if not has_key:
        raise StockFileError(_("The file holds no key, only blank lines."), "empty_file")
    return StockFileInfo(encoding=encoding, lines=lines + line_started, entries=entries + line_started)


def _strip_ends(text: str, ends: tuple[str, ...]) -> str:
    for end in ends:
        text = text.replace(end, "")
    return text


def iter_entries(path: Path, *, encoding: str, delimiter: str, skip_entries: int = 0) -> Iterator[Entry]:
    """Yield the file's entries in order, from entry `skip_entries + 1` on."""
    separator = DELIMITER_CHARACTERS[StockDelimiter(delimiter)]
    for index, entry in enumerate(_split(_decoded_pieces(path, encoding), separator)):
        if index >= skip_entries:
            yield entry


def _decoded_pieces(path: Path, encoding: str) -> Iterator[str]:
    """The file's text, a chunk at a time, with every line end ("\r\n", "\r", "\n") as "\n"."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    carried = ""  # a "\r" that ends a chunk may be the first half of a "\r\n"
    with open(path, "rb") as file:
        while True:
            raw = file.read(READ_CHUNK)
            text = carried + decoder.decode(raw, final=not raw)
            carried = ""
            if raw and text.endswith("\r"):
                text, carried = text[:-1], "\r"
            if text:
                yield text.replace("\r\n", "\n").replace("\r", "\n")
            if not raw:
                return


def _text_only(pieces: Iterable[str]) -> Iterator[str]:
    for text in pieces:
        if "\x00" in text:
            raise StockFileError(_("This is a binary file, not a text file of keys."), "binary_file")
        yield text


def _split(pieces: Iterable[str], separator: str | None) -> Iterator[Entry]:
    """Entries from text that arrives in pieces cut anywhere: an entry ends at a separator or a line end.

    Every line end ends an entry (so a blank line is an empty entry, as it was when lines were read);
    the end of the file ends one only if the last line has something on it.
    """
    line = number = 1
    held: list[str] = []
    size = 0
    line_started = False

    def finish() -> Entry:
        nonlocal held, size
        entry = Entry(line, number, "".join(held) if size <= ENTRY_MAX_CHARS else None)
        held, size = [], 0
        return entry

    for text in pieces:
        for index, segment in enumerate(text.split("\n")):
            if index:  # a line end came before this segment
                yield finish()
                line, number, line_started = line + 1, 1, False
            parts = [segment] if separator is None else segment.split(separator)
            for place, part in enumerate(parts):
                if place:
                    yield finish()
                    number += 1
                if size <= ENTRY_MAX_CHARS:  # past it, the entry is only counted
                    held.append(part)
                size += len(part)
            line_started = line_started or bool(segment)
    if line_started:
        yield finish()
