"""Product descriptions: Markdown (or plain text) rendered to HTML that no script gets through.

A description is rendered once, when it is saved (`services.product_create` / `product_update` store
`Product.description_html`); pages and the API never call the renderer. The renderer must still be safe
on any input, because a merchant chooses it: cmark-gfm (GitHub's CommonMark implementation in C) runs in
time linear in its input, pathological cases included (thousands of `[`, `*` or backticks), where
Python-Markdown took 43 s on 20 KB of `[`. Its HTML then goes through nh3, whose HTML tree builder is
quadratic in how deeply blocks nest (5,000 nested quotes take seconds); Markdown a person writes nests a
few levels, so text nested deeper than `MAX_NESTING` is shown as plain text instead.
`bench/markdown_render.py` prints the time per hostile input.
"""

import html
import re

import cmarkgfm
import nh3
from cmarkgfm.cmark import Options

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "b",
    "i",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "del",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}}

# A line break in the text is a line break on the page (merchants paste plain text); raw HTML is left
# out by cmark itself (its safe default), and nh3 removes whatever else is not on the allow-list.
OPTIONS = Options.CMARK_OPT_HARDBREAKS | Options.CMARK_OPT_VALIDATE_UTF8
EXTENSIONS = ["table", "strikethrough"]

# The only tags cmark nests without bound (quotes and lists); a list level is two (ul/ol and li).
MAX_NESTING = 32
_CONTAINER_TAG = re.compile(r"<(/?)(?:blockquote|ul|ol|li)\b")


def render_markdown(text: str) -> str:
    """Markdown → HTML, then sanitised by nh3 (an allow-list: no script, style, event attributes,
    `javascript:` links or images); links get rel="noopener noreferrer nofollow". Time is linear in
    the length of `text`, whatever it holds."""
    text = text or ""
    rendered = cmarkgfm.markdown_to_html_with_extensions(text, options=OPTIONS, extensions=EXTENSIONS)
    if _nests_too_deeply(rendered):
        rendered = _plain_text_html(text)
    return nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def _nests_too_deeply(rendered: str) -> bool:
    depth = 0
    for match in _CONTAINER_TAG.finditer(rendered):
        depth += -1 if match.group(1) else 1
        if depth > MAX_NESTING:
            return True
    return False


def _plain_text_html(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "<p>" + "<br>\n".join(html.escape(line) for line in lines) + "</p>\n"
