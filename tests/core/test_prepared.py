"""core.prepared: the hot paths' statements prepared once per PostgreSQL session."""

import pytest
from django.db import connection, transaction

from core import prepared
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db


def _prepared_here() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements")
        return dict(cursor.fetchall())


def _run(sql, params):
    with connection.cursor() as cursor:
        prepared.execute(cursor, sql, params)
        return cursor.fetchall()


@requires_postgres
def test_a_text_is_prepared_once_per_session_and_answers_as_the_text_would():
    sql = "SELECT %(a)s::int + %(b)s::int, %(a)s::int * 2, '100%%'"
    with connection.cursor() as cursor:
        cursor.execute(sql, {"a": 4, "b": 5})
        expected = cursor.fetchall()
    assert _run(sql, {"a": 4, "b": 5}) == expected == [(9, 8, "100%")]
    session = _prepared_here()
    name = prepared._statement(sql)[0]
    assert session[name] == f"PREPARE {name} AS SELECT $1::int + $2::int, $1::int * 2, '100%'"
    assert _run(sql, {"a": 1, "b": 1}) == [(2, 2, "100%")]
    assert _prepared_here() == session  # the second run executed what the first prepared


@requires_postgres
def test_positional_values_arrays_and_nulls_reach_their_parameters():
    sql = "SELECT %s::bigint = ANY(%s::bigint[]), %s::text IS NULL, cardinality(%s::varchar[])"
    assert _run(sql, [2, [1, 2, 3], None, []]) == [(True, True, 0)]
    assert _run(sql, [5, [1], "x", ["a", "b"]]) == [(False, False, 2)]


@requires_postgres
def test_a_statement_stays_prepared_after_its_transaction_rolls_back():
    sql = "SELECT %s::int + 1"
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        assert _run(sql, [1]) == [(2,)]
        raise ZeroDivisionError
    assert _run(sql, [2]) == [(3,)]


@requires_postgres
@pytest.mark.django_db(transaction=True)  # a connection closed outside any test transaction
def test_a_new_connection_prepares_again():
    sql = "SELECT %s::int * 3"
    assert _run(sql, [2]) == [(6,)]
    connection.close()
    assert prepared._statement(sql)[0] not in _prepared_here()
    assert _run(sql, [3]) == [(9,)]


@requires_postgres
def test_a_batch_with_many_values_runs_as_plain_text():
    values = list(range(prepared.MAX_VALUES + 1))
    sql = "SELECT " + " + ".join(["%s::int"] * len(values))
    assert _run(sql, values) == [(sum(values),)]
    assert prepared._statement(sql)[0] not in _prepared_here()


def test_placeholders_become_numbered_parameters():
    _name, text, order = prepared._statement("SELECT %(x)s, %(y)s, %(x)s, '5%%'")
    assert (text, order) == ("SELECT $1, $2, $1, '5%'", ("x", "y"))
    assert prepared._statement("SELECT %s, %s")[1:] == ("SELECT $1, $2", 2)
    with pytest.raises(ValueError, match="mixes"):
        prepared._statement("SELECT %s, %(x)s")


def test_off_postgresql_the_text_runs_as_it_is(settings):
    # On SQLite (the demo) nothing is prepared; on PostgreSQL this is the ordinary path too.
    assert _run("SELECT %s + 1", [1]) == [(2,)]


@requires_postgres
def test_behind_a_transaction_pooler_nothing_is_prepared(settings):
    settings.DATABASE_PREPARED_STATEMENTS = False  # DATABASE_PREPARED_STATEMENTS=0 (PgBouncer, transaction mode)
    sql = "SELECT %s::int - 1"
    assert _run(sql, [5]) == [(4,)]
    assert prepared._statement(sql)[0] not in _prepared_here()
