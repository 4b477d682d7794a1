"""The shop's one piece of raw SQL: inserting sealed card keys while the database itself skips the
merchant's duplicates (the unique (merchant, fingerprint) constraint decides, so racing imports
cannot both insert a key). PostgreSQL: COPY into a temporary table, then one INSERT … SELECT … ON
CONFLICT DO NOTHING RETURNING; SQLite 3.35+: multi-row INSERT … RETURNING; elsewhere row by row.
"""

import io
import sqlite3

from django.db import transaction

from shop.models import CardKey


def card_keys_insert_skipping_duplicates(rows: list[tuple]) -> set[bytes]:
    """Insert card-key rows, skipping any whose (merchant, fingerprint) already exists; return the
    fingerprints that were inserted.

    Each row is `(product_id, merchant_id, upload_id, fingerprint, sealed, status, created_at)`. The unique
    constraint decides, inside the database, so two racing uploads cannot both insert one key; `RETURNING`
    makes the counts exact. Rows should be sorted by fingerprint: racing inserts then take the index
    locks in the same order and cannot deadlock. Must run inside the caller's transaction (the COPY's
    temporary table empties at each commit).
    """
    assert transaction.get_connection().in_atomic_block, "inserting card keys needs the caller's transaction"
    if not rows:
        return set()
    table = CardKey._meta.db_table
    columns = "product_id, merchant_id, upload_id, fingerprint, sealed, status, created_at"
    connection = transaction.get_connection()
    adapt = connection.ops.adapt_datetimefield_value
    rows = [(*row[:6], adapt(row[6])) for row in rows]
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES %s "  # noqa: S608 - table and columns are ours
        "ON CONFLICT (merchant_id, fingerprint) DO NOTHING RETURNING fingerprint"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            return _card_keys_copy_insert_postgresql(cursor.cursor, rows)
        if connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):
            inserted: set[bytes] = set()
            per_statement = 100  # 700 parameters: under every SQLite build's variable limit
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
                cursor.execute(sql.replace("%s", values, 1), [v for row in chunk for v in row])
                inserted.update(bytes(fp) for (fp,) in cursor.fetchall())
            return inserted
        # Portable fallback: one row at a time, the constraint still decides.
        inserted = set()
        for row in rows:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s) "  # noqa: S608
                "ON CONFLICT (merchant_id, fingerprint) DO NOTHING",
                row,
            )
            if cursor.rowcount == 1:
                inserted.add(bytes(row[3]))
        return inserted


def _card_keys_copy_insert_postgresql(cursor, rows: list[tuple]) -> set[bytes]:
    """COPY the batch into a temporary table, then one INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING.

    COPY skips building and parsing a huge VALUES statement (about twice as fast as execute_values);
    the INSERT takes the rows in fingerprint order, so racing batches lock index entries in one order.
    The temporary table lives with the connection and is emptied at each commit.
    """
    cursor.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS shop_cardkey_incoming ("
        " product_id bigint, merchant_id bigint, upload_id bigint, fingerprint bytea, sealed bytea,"
        " status varchar(16), created_at timestamptz) ON COMMIT DELETE ROWS"
    )
    lines = []
    for product_id, merchant_id, upload_id, fingerprint, sealed, status, created_at in rows:
        upload_text = "\\N" if upload_id is None else str(upload_id)
        lines.append(
            f"{product_id}\t{merchant_id}\t{upload_text}\t\\\\x{fingerprint.hex()}\t\\\\x{sealed.hex()}"
            f"\t{status}\t{created_at.isoformat()}\n"
        )
    cursor.copy_expert("COPY shop_cardkey_incoming FROM STDIN", io.StringIO("".join(lines)))
    columns = "product_id, merchant_id, upload_id, fingerprint, sealed, status, created_at"
    cursor.execute(
        f"INSERT INTO {CardKey._meta.db_table} ({columns}) "  # noqa: S608 - our own table and columns
        f"SELECT {columns} FROM shop_cardkey_incoming ORDER BY fingerprint "
        "ON CONFLICT (merchant_id, fingerprint) DO NOTHING RETURNING fingerprint"
    )
    inserted = {bytes(fp) for (fp,) in cursor.fetchall()}
    cursor.execute("TRUNCATE shop_cardkey_incoming")  # a second batch in the same transaction starts empty
    return inserted
