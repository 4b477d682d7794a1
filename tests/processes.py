"""Real processes for tests: a Celery worker on pytest-django's test database, and a Redis server of
the test's own that it may stop, kill and restart (the shared Redis is never touched).

The rest of the suite runs Celery eagerly (tests/conftest.py); tests that use these publish to a real
broker and watch the database while a worker subprocess does the work.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from django.db import connection

from config.celery import app as celery_app
from escrow.tasks import order_deliver_task

REPO_ROOT = Path(__file__).resolve().parents[1]
CELERY_BIN = REPO_ROOT / ".venv" / "bin" / "celery"
REDIS_SERVER_BIN = shutil.which("redis-server")
WORKER_START_SECONDS = 30


def wait_for(check: Callable[[], object], *, seconds: float, what: str, interval: float = 0.05):
    """Poll `check` until it returns something truthy, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {seconds} s waiting for {what}.")
        time.sleep(interval)


def test_database_url() -> str:
    """A URL for the database pytest-django created (test_<name>), for a worker subprocess."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"


test_database_url.__test__ = False  # a helper, not a test, despite its name


def process_group_stop(process: subprocess.Popen, *, kill: bool = False) -> None:
    """Stop a process started in its own session, and everything it forked.

    Warm (SIGTERM, then SIGKILL after 15 s) unless `kill`, which is `kill -9` at once.
    """
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    # Pool children that outlived their parent would keep connections to the test database open.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


class RedisServer:
    """A `redis-server` on a free port, without persistence: a kill loses everything queued in it."""

    def __init__(self, *, log: Path):
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def start(self) -> None:
        command = [REDIS_SERVER_BIN, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly"]
        command += ["no", "--dir", str(self.log.parent)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._ping, seconds=10, what=f"redis-server on port {self.port}:\n{log_tail(self.log)}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or `kill -9`); with saving off, either way what was queued is gone."""
        if self.process is not None:
            process_group_stop(self.process, kill=kill)
            self.process = None


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(log=tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


requires_redis_server = pytest.mark.skipif(REDIS_SERVER_BIN is None, reason="needs the redis-server program")


class Worker:
    """A `celery -A config worker` subprocess on a Redis broker and pytest-django's test database."""

    def __init__(self, *, broker_url: str, log: Path, beat: bool = False, env: dict[str, str] | None = None):
        self.broker_url = broker_url
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log = log
        self.beat = beat
        self.env = env or {}
        self.process: subprocess.Popen | None = None
        # A separate app for remote control, so the shop's own app keeps its configuration.
        self.control_app = Celery("worker-probe", broker=broker_url, set_as_current=False)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            **self.env,
        }
        command = [str(CELERY_BIN), "-A", "config", "worker", "--pool=prefork", "--concurrency=2", "-l", "warning"]
        command += ["-n", self.name, "--without-heartbeat", "--without-gossip", "--without-mingle"]
        if self.beat:
            command += ["--beat", "--schedule-filename", str(self.log.with_suffix(".beat-schedule"))]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + WORKER_START_SECONDS
        while not self.control_app.control.ping(destination=[self.name], timeout=0.5):
            if self.process.poll() is not None:
                pytest.fail(f"The Celery worker exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"No answer to a ping from the worker in {WORKER_START_SECONDS} s:\n{self.log_tail()}")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            process_group_stop(self.process, kill=kill)
        self.control_app.close()

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _inspect(self):
        return self.control_app.control.inspect(destination=[self.name], timeout=1.0)

    def _deliveries_if_idle(self) -> int | None:
        stats = (self._inspect().stats() or {}).get(self.name)
        active = (self._inspect().active() or {}).get(self.name)
        if stats is None or active is None or active:
            return None
        return stats.get("total", {}).get(order_deliver_task.name, 0)

    def deliveries_run(self, *, seconds: float = 10) -> int:
        """How many `escrow.deliver_order` tasks the worker has run, once it has nothing running."""
        deadline = time.monotonic() + seconds
        while (count := self._deliveries_if_idle()) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"The worker stayed busy for {seconds} s:\n{self.log_tail()}")
            time.sleep(0.05)
        return count


@contextlib.contextmanager
def worker_running(**kwargs) -> Iterator[Worker]:
    worker = Worker(**kwargs)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


class Beat:
    """A `celery -A config beat` subprocess (its own schedule file) on a Redis broker."""

    def __init__(self, *, broker_url: str, log: Path, env: dict[str, str] | None = None):
        self.broker_url = broker_url
        self.log = log
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": self.broker_url,
            **self.env,
        }
        command = [str(CELERY_BIN), "-A", "config", "beat", "-l", "info"]
        command += ["--schedule", str(self.log.with_suffix(".beat-schedule"))]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(lambda: "beat: Starting" in self.log_text(), seconds=WORKER_START_SECONDS, what=f"{self.log}")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            process_group_stop(self.process, kill=kill)

    def sent(self, task_name: str) -> int:
        """How many times this beat has sent `task_name` (from its log)."""
        return self.log_text().count(f"Sending due task {task_name} ")


@contextlib.contextmanager
def beat_running(**kwargs) -> Iterator[Beat]:
    beat = Beat(**kwargs)
    try:
        beat.start()
        yield beat
    finally:
        beat.stop()


def _reset_broker_connections() -> None:
    # The app caches its connection and producer pools on first use; drop them so the next publish
    # connects to the broker now configured (what Celery itself does after a fork). They are not
    # closed: kombu keeps them in a global registry that would hand the closed pool back.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextlib.contextmanager
def publishing_to(broker_url: str, **conf) -> Iterator[None]:
    """Publish this process's tasks to `broker_url` instead of running them in-process (eagerly)."""
    settings = celery_app.conf
    changed = {"task_always_eager": False, "broker_url": broker_url, "broker_transport_options": {}, **conf}
    saved = {name: settings[name] for name in changed}
    settings.update(changed)
    _reset_broker_connections()
    try:
        yield
    finally:
        settings.update(saved)
        _reset_broker_connections()
