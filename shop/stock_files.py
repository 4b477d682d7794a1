"""Reading merchants' stock files: limits, encodings and splitting lines into entries. No database here.

Files come from suppliers' systems, often on Windows and in Chinese encodings. A file is read as UTF-8
(a BOM is dropped) and, if that fails, as GB18030 (a superset of GBK and GB2312); CRLF, LF and CR line
ends are all one line end. A file with a NUL byte, or one that is neither encoding, is not text.
Everything streams: a line at a time, never the whole file.
"""

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.utils.translation import gettext as _

from config.errors import Refused
from shop.models import DELIMITER_CHARACTERS, StockDelimiter

ENCODINGS = ("utf-8-sig", "gb18030")
READ_BUFFER = 1 << 20


class StockFileError(Refused, ValueError):
    """The upload cannot be imported; the message is for the merchant, `code` for the API."""


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


def _open_text(path: Path, encoding: str) -> io.TextIOWrapper:
    # newline=None: "\r\n", "\r" and "\n" all end a line and arrive as "\n".
    return open(path, encoding=encoding, errors="strict", newline=None, buffering=READ_BUFFER)


def _split(line: str, separator: str | None) -> list[str]:
    line = line.rstrip("\n")
    return [line] if separator is None else line.split(separator)


def inspect(path: Path, *, delimiter: str, max_lines: int) -> StockFileInfo:
    """Check a saved upload before anything is imported; raise `StockFileError` saying what is wrong."""
    if os.path.getsize(path) == 0:
        raise StockFileError(_("The file is empty."), "empty_file")
    separator = DELIMITER_CHARACTERS[StockDelimiter(delimiter)]
    for encoding in ENCODINGS:
        try:
            return _scan(path, encoding=encoding, separator=separator, max_lines=max_lines)
        except UnicodeDecodeError:
            continue
    raise StockFileError(
        _("This is not a text file in UTF-8 or GB18030/GBK; save it as text and try again."), "not_text"
    )


def _scan(path: Path, *, encoding: str, separator: str | None, max_lines: int) -> StockFileInfo:
    lines = entries = 0
    has_key = False
    with _open_text(path, encoding) as text:
        for line in text:
            lines += 1
            if lines > max_lines:
                raise StockFileError(
                    _("The file has more than %(lines)s lines; split it into smaller files.")
                    % {"lines": f"{max_lines:,}"},
                    "too_many_lines",
                )
            if "\x00" in line:
                raise StockFileError(_("This is a binary file, not a text file of keys."), "binary_file")
            if separator is None:
                entries += 1
                has_key = has_key or bool(line.strip())
            else:
                parts = _split(line, separator)
                entries += len(parts)
                has_key = has_key or any(part.strip() for part in parts)
    if not has_key:
        raise StockFileError(_("The file holds no key, only blank lines."), "empty_file")
    return StockFileInfo(encoding=encoding, lines=lines, entries=entries)


def iter_lines(path: Path, *, encoding: str, delimiter: str, skip_lines: int = 0) -> Iterator[tuple[int, list[str]]]:
    """Yield `(line number, raw entries of that line)` from line `skip_lines + 1` on."""
    separator = DELIMITER_CHARACTERS[StockDelimiter(delimiter)]
    with _open_text(path, encoding) as text:
        for number, line in enumerate(text, start=1):
            if number > skip_lines:
                yield number, _split(line, separator)
