"""Server-side prepared statements for the hot paths' own SQL (issue 9).

PostgreSQL parses and plans every statement psycopg2 sends, and for the short statements of a purchase
that is most of the server's work: the order's status by id costs it ~0.05 ms as text and ~0.02 ms
prepared, the delivery's message read ~0.25 ms and ~0.03 ms (`/proc` CPU of the backend, 3,000 runs
each). psycopg2 interpolates parameters on the client and never prepares; psycopg 3 would, but the
stack is psycopg2. So the statements whose text is built once (the checkout's, the payment webhook's,
the delivery's, the key reveal's: a fixed text per shape, every value a parameter) go through
`execute` here, which on a persistent PostgreSQL connection `PREPARE`s a text the first time the
session sees it and from then on sends `EXECUTE name (values)`; PostgreSQL replans it if a table it
reads changes (a migration), and after five runs keeps one generic plan when that costs no more.

The `PREPARE` is sent on the driver's own cursor, once per session and text: Django's query log (and
the statement budgets counted from it) sees the `EXECUTE`, one per statement as before. A prepared
statement outlives a rolled-back transaction (it belongs to the session), so a text is known prepared
exactly when its `PREPARE` succeeded on this connection; a new connection starts with none.
Elsewhere (SQLite: the demo), with DATABASE_PREPARED_STATEMENTS off (behind a pooler in transaction
mode, which would hand the session's statements to other clients), past `MAX_PER_SESSION` texts in a
session, and for a text with more than `MAX_VALUES` values, the text is executed as it is.
"""

import functools
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

MAX_PER_SESSION = 200
# A text with more values than this is a batch (a release sweep's transfers): planned once per run
# anyway, and not worth a session's memory.
MAX_VALUES = 100
_PLACEHOLDER = re.compile(r"%(?:\((?P<name>[^)]+)\))?s|%%")
_names = itertools.count(1)


@functools.cache
def _statement(sql: str) -> tuple[str, str, tuple[str, ...] | int]:
    """(name, the text with $1, $2 … for its placeholders, how to order the values): the names of a
    text's `%(name)s` placeholders in the order their numbers were given, or how many `%s` it has."""
    numbers: dict[str, int] = {}
    positional = 0

    def number(match: re.Match) -> str:
        nonlocal positional
        if match.group(0) == "%%":
            return "%"
        name = match.group("name")
        if name is None:
            positional += 1
            return f"${positional}"
        return f"${numbers.setdefault(name, len(numbers) + 1)}"

    text = _PLACEHOLDER.sub(number, sql)
    if numbers and positional:
        raise ValueError("a statement mixes %s and %(name)s placeholders")
    return f"hot_{next(_names)}", text, tuple(numbers) if numbers else positional


def _session_statements(cursor) -> set[str] | None:
    """The names prepared on `cursor`'s connection, kept on Django's wrapper for the driver connection
    it holds now (None off PostgreSQL)."""
    database = cursor.db
    if database.vendor != "postgresql" or not settings.DATABASE_PREPARED_STATEMENTS:
        return None
    raw = database.connection
    known = getattr(database, "_prepared_statements", None)
    if known is None or known[0] is not raw:
        known = (raw, set())
        database._prepared_statements = known
    return known[1]


def execute(cursor, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
    """`cursor.execute(sql, params)` (a Django cursor), as a prepared statement on PostgreSQL."""
    prepared = _session_statements(cursor)
    if prepared is None:
        cursor.execute(sql, params)
        return
    if len(params) > MAX_VALUES:
        cursor.execute(sql, params)
        return
    name, text, order = _statement(sql)
    if name not in prepared:
        if len(prepared) >= MAX_PER_SESSION:
            cursor.execute(sql, params)
            return
        with cursor.db.wrap_database_errors:  # the driver's cursor: setup, not a statement of the caller
            cursor.cursor.execute(f"PREPARE {name} AS {text}")
        prepared.add(name)
    values = [params[key] for key in order] if isinstance(order, tuple) else list(params)
    if not isinstance(order, tuple) and len(values) != order:
        raise ValueError(f"{len(values)} values for {order} placeholders")
    cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(values))})" if values else f"EXECUTE {name}", values)
