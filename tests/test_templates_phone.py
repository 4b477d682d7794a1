"""Issue 14, item 11: on a phone a wide table scrolls inside its own box and says so; the page never
scrolls sideways. Every table in a page template sits in a labelled, focusable `.table-scroll` region
(the browser test `tests/browser/test_phone_width.py` measures the main pages at 360 px)."""

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# Small enough never to scroll: the product page's two-column price tiers.
NARROW = {("escrow", "product.html")}


def test_every_page_table_scrolls_in_a_labelled_region():
    bare = []
    for path in TEMPLATES.rglob("*.html"):
        if "email" in path.parts or path.parts[-2:] in NARROW:
            continue
        text = path.read_text()
        for table in re.finditer(r"<table\b", text):
            opened = text[: table.start()].rsplit("</div>", 1)[-1]
            region = re.search(r'<div class="table-scroll" tabindex="0" role="region" aria-label="[^"]+">', opened)
            if region is None:
                bare.append(f"{path.relative_to(TEMPLATES)}:{text[: table.start()].count(chr(10)) + 1}")
    assert bare == []
