"""Print the database URL the tests should use: PostgreSQL on 127.0.0.1 when one answers, else SQLite.

`make test` calls this so that a developer with PostgreSQL running gets the row-lock and concurrency
tests without setting anything, and one without it still gets the rest of the suite.
"""

import os
import socket

POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/cardshop"


def main() -> None:
    if os.environ.get("DATABASE_URL"):
        print(os.environ["DATABASE_URL"])
        return
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5).close()
    except OSError:
        print("sqlite:///db.sqlite3")
    else:
        print(POSTGRES_URL)


if __name__ == "__main__":
    main()
