"""Every message the code and templates mark for translation has a Simplified Chinese translation.

`makemessages` runs into a temporary copy of the catalogue (the committed one is never touched), so a
string added to the code without its msgstr fails here, as does an empty or fuzzy entry.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command

REPO = Path(__file__).resolve().parent.parent
CATALOGUE = REPO / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"


def untranslated(po_path: Path) -> list[str]:
    """The msgids of entries with an empty or fuzzy translation (obsolete entries do not count)."""
    missing = []
    for entry in po_entries(po_path.read_text(encoding="utf-8")):
        if not entry["msgid"]:
            continue  # the header
        if "fuzzy" in entry["flags"]:
            missing.append(f"fuzzy: {entry['msgid']!r}")
        elif not entry["msgstr"] or not all(entry["msgstr"]):
            missing.append(f"empty: {entry['msgid']!r}")
    return missing


def po_entries(text: str) -> list[dict]:
    """A .po file's live entries: msgid, its translations (one, or one per plural form) and flags.

    Obsolete entries (`#~`) are left out. Enough of the format for our catalogue; no library needed.
    """
    entries: list[dict] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#~")]
        if not lines:
            continue
        flags: set[str] = set()
        fields: dict[str, str] = {}
        current = None
        for line in lines:
            if line.startswith("#,"):
                flags |= {flag.strip() for flag in line[2:].split(",")}
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                fields[current] += _unquote(line)
            else:
                current, _space, rest = line.partition(" ")
                fields[current] = _unquote(rest)
        if "msgid" not in fields:
            continue
        translations = [value for key, value in fields.items() if key.startswith("msgstr")]
        entries.append({"msgid": fields["msgid"], "msgstr": translations, "flags": flags})
    return entries


def _unquote(quoted: str) -> str:
    return quoted.strip()[1:-1]


def test_the_committed_catalogue_has_no_empty_or_fuzzy_entry():
    assert untranslated(CATALOGUE) == []


# What makemessages reads: our packages and the templates (not the tests, benchmarks or installed tools).
SOURCES = ["accounts", "config", "core", "disputes", "escrow", "risk", "shop", "staff", "templates"]


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs GNU gettext (apt-get install gettext)")
def test_every_marked_message_is_translated(tmp_path, settings):
    # makemessages writes beside the sources it reads, so it runs in a tree of links to them with
    # its own locale folder: the committed catalogue is only copied, never rewritten.
    for name in SOURCES:
        if (REPO / name).exists():
            (tmp_path / name).symlink_to(REPO / name)
    copy = tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
    copy.parent.mkdir(parents=True)
    shutil.copy(CATALOGUE, copy)
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    before = CATALOGUE.read_bytes()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        call_command("makemessages", locale=["zh_Hans"], symlinks=True, no_obsolete=True, verbosity=0)
    finally:
        os.chdir(cwd)
    assert CATALOGUE.read_bytes() == before
    missing = untranslated(copy)
    assert missing == [], f"{len(missing)} message(s) without a zh_Hans translation:\n" + "\n".join(missing)
