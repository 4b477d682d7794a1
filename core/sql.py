"""Plain SQL for a model's row, for the few hot paths that write several tables in ONE statement (a
data-modifying CTE): the checkout (escrow/checkout_sql.py). The ORM cannot put two writes in one
statement, and compiling its queries cost the checkout more CPU than PostgreSQL's work (issue 9).

The text is built from the model's own metadata (table, columns) and never from input; every value is
a parameter, prepared by its field exactly as `Model.save()` would (`pre_save`, `get_db_prep_save`),
except a partial index's condition, which a statement states as a literal (`sql_literal`).
"""

import re
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from django.db import connection, models


@cache
def on_postgresql() -> bool:
    """Whether the database is PostgreSQL. The hot paths ask on every act, and `connection.vendor` goes
    through Django's connection proxy and a thread-local lookup each time (~4 µs on the 2-core bench
    machine, a few times per checkout); the answer is fixed by the settings for the process's life."""
    return connection.vendor == "postgresql"


@cache
def _insert_text(model: type[models.Model], with_pk: bool) -> tuple[str, tuple[models.Field, ...]]:
    meta = model._meta
    fields = tuple(f for f in meta.concrete_fields if with_pk or not f.primary_key)
    quote = connection.ops.quote_name
    text = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    return text, fields


def insert_sql(instance: models.Model, *, returning_pk: bool = False) -> tuple[str, list[Any]]:
    """`INSERT` of `instance` as one statement's text and parameters: the row `save(force_insert=True)`
    writes (its primary key too when it is set, else the database's default), optionally
    `RETURNING` the primary key."""
    with_pk = instance.pk is not None
    text, fields = _insert_text(type(instance), with_pk)
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    if returning_pk:
        text += f" RETURNING {connection.ops.quote_name(instance._meta.pk.column)}"
    return text, params


@cache
def select_columns(model: type[models.Model], alias: str, exclude: Sequence[str] = ()) -> tuple[str, tuple[str, ...]]:
    """The select list of `model`'s concrete columns under the table alias `alias` (leaving out the
    fields named in `exclude`, which the instance then loads on first use), and their field names in
    that order, for `instance_from_row`."""
    fields = [f for f in model._meta.concrete_fields if f.name not in exclude]
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(f.column)}" for f in fields), tuple(f.attname for f in fields)


@cache
def _converters(model: type[models.Model], attnames: tuple[str, ...]) -> tuple:
    fields = {f.attname: f for f in model._meta.concrete_fields}
    return tuple(tuple(fields[name].get_db_converters(connection)) for name in attnames)


def instance_from_row(model: type[models.Model], attnames: tuple[str, ...], values: Iterable[Any]) -> models.Model:
    """A `model` instance from one row of `select_columns`, its values converted as the ORM converts
    them (a JSON field's text decoded, …)."""
    converted = []
    for value, converters in zip(values, _converters(model, attnames), strict=True):
        for converter in converters:
            value = converter(value, None, connection)
        converted.append(value)
    return model.from_db(connection.alias, list(attnames), converted)


def sql_literal(value: str) -> str:
    """A fixed value of the code's (a model's choice, never input) as an SQL string literal.

    For a condition a partial index is defined by (`status = 'available'`): a prepared statement runs,
    after its first five times, on PostgreSQL's generic plan, made without its parameters' values, and
    that plan can use the partial index only if the statement states the index's condition itself. With
    the status a parameter, the key claim's generic plan walked the primary key through every other
    product's keys and the reservation caps read the whole order table (tests/escrow/test_checkout_plans.py)."""
    if not re.fullmatch(r"[a-z_]+", value):
        raise ValueError(f"not a choice value to write into SQL: {value!r}")
    return f"'{value}'"
