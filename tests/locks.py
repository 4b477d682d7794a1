"""Seeing, from a test, that another session is waiting for a PostgreSQL lock (races staged in threads
or worker processes: the second party must be blocked on the lock before the first lets go)."""

import threading
import time

from django.db import connection

_WAITING = "FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"


def lock_waiters() -> int:
    """How many sessions on the test database wait for a lock right now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(f"SELECT count(*) {_WAITING}")
        return cursor.fetchone()[0]


def backend_waiting_for_a_lock() -> int | None:
    """The PostgreSQL backend (pid) of a session waiting for a lock, if there is one."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pid {_WAITING}")
        row = cursor.fetchone()
    return row[0] if row else None


def wait_until_blocked(thread: threading.Thread, waiters: int, *, what: str = "the contested lock") -> None:
    """Bounded poll: until `waiters` sessions wait on a lock, or `thread` has already finished."""
    deadline = time.monotonic() + 20
    while thread.is_alive() and lock_waiters() < waiters:
        assert time.monotonic() < deadline, f"the path never reached {what}"
        time.sleep(0.02)
