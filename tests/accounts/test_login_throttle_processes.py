"""The login lockout holds across web processes: two gunicorn workers, Redis as the shared cache
(`CACHE_URL`), failures spread over both, and both refuse once the account is locked from an address.

A real-process test: gunicorn serves pytest-django's test database (committed rows, so a transactional
test), with the test as the trusted reverse proxy naming the client's address. Which worker served each
request is read from gunicorn's access log (`%(p)s`, the worker's pid), so the test proves that both
took part instead of hoping so."""

import concurrent.futures
import http.client
import os
import re
import subprocess
import uuid
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
from django.conf import global_settings

from tests.conftest import requires_postgres
from tests.factories import user_create
from tests.processes import free_port, log_tail, process_group_stop, test_database_url, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN_BIN = REPO_ROOT / ".venv" / "bin" / "gunicorn"
CACHE_URL = os.environ.get("TEST_LOGIN_CACHE_URL", "redis://127.0.0.1:6379/2")
PASSWORD = "pw-for-tests-1"
FAILURE_LIMIT = 5

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


def _csrf(headers: list[tuple[str, str]], page: str) -> tuple[str, str]:
    """(the csrftoken cookie, the form's token) from a login page's answer."""
    cookies = SimpleCookie()
    for name, value in headers:
        if name.lower() == "set-cookie":
            cookies.load(value)
    return cookies["csrftoken"].value, re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def _redis_missing() -> str | None:
    try:
        redis.Redis.from_url(CACHE_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return f"needs Redis at {CACHE_URL} (TEST_LOGIN_CACHE_URL) as the shared cache"
    return None


class Web:
    """`gunicorn config.wsgi` with two sync workers on a free port, on the test database and Redis."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.log = tmp_path / "gunicorn.log"
        self.access_log = tmp_path / "access.log"
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CACHE_URL": CACHE_URL,
            "AXES_ENABLED": "1",
            "TRUSTED_PROXIES": "127.0.0.1/32",
            "DEBUG": "0",
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "CELERY_TASK_ALWAYS_EAGER": "1",
        }
        command = [str(GUNICORN_BIN), "config.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "2"]
        command += ["--worker-class", "sync", "--access-logfile", str(self.access_log)]
        command += ["--access-logformat", "%(p)s %(s)s %(m)s %(U)s"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def request(self, method: str, path: str, *, body: dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)  # a new connection each time
        try:
            conn.request(
                method,
                path,
                body=urlencode(body) if body is not None else None,
                headers={"Host": "127.0.0.1", **(headers or {})},
            )
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read().decode(errors="replace")
        finally:
            conn.close()

    def wait_until_up(self) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{log_tail(self.log)}")
            try:
                return self.request("GET", "/accounts/login/")[0] == 200
            except OSError:
                return False

        wait_for(up, seconds=60, what=f"gunicorn to answer:\n{log_tail(self.log)}", interval=0.2)

    def workers_by_status(self) -> dict[int, set[str]]:
        """{status: {worker pids}} of every POST to the login page so far."""
        served: dict[int, set[str]] = {}
        for line in self.access_log.read_text().splitlines():
            if match := re.fullmatch(r"<?(\d+)>? (\d{3}) POST /accounts/login/", line.strip()):
                served.setdefault(int(match.group(2)), set()).add(match.group(1))
        return served

    def stop(self) -> None:
        process_group_stop(self.process)


@pytest.fixture
def web(tmp_path):
    if reason := _redis_missing():
        pytest.skip(reason=reason)
    redis.Redis.from_url(CACHE_URL).flushdb()
    server = Web(tmp_path)
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()
        redis.Redis.from_url(CACHE_URL).flushdb()


def test_the_login_lockout_holds_across_two_gunicorn_workers(web, settings):
    # Hashed the way the web processes check it (the suite's fast MD5 hasher is the test process's only).
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    user = user_create(password=PASSWORD)
    client_ip = f"198.51.100.{uuid.uuid4().int % 200 + 1}"
    status, headers, page = web.request("GET", "/accounts/login/", headers={"X-Forwarded-For": client_ip})
    csrf_cookie, csrf_token = _csrf(headers, page)
    form_headers = {
        "X-Forwarded-For": client_ip,
        "Cookie": f"csrftoken={csrf_cookie}",
        "Content-Type": "application/x-www-form-urlencoded",
    }

    def sign_in(password: str) -> int:
        body = {"username": user.username, "password": password, "csrfmiddlewaretoken": csrf_token}
        return web.request("POST", "/accounts/login/", body=body, headers=form_headers)[0]

    # Two at a time, so that both workers (each serves one request at a time) take some.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        failures = list(pool.map(sign_in, ["wrong"] * (FAILURE_LIMIT - 1)))
        assert failures == [200] * (FAILURE_LIMIT - 1)  # "wrong username or password"
        assert sign_in("wrong") == 429  # the fifth failure, counted over both workers, locks
        refused = list(pool.map(sign_in, [PASSWORD] * 8))
    assert refused == [429] * 8  # even the right password, whichever worker answers

    served = web.workers_by_status()
    assert len(served[200]) == 2, f"one worker took every failure: {served}"
    assert len(served[429]) == 2, f"one worker took every refusal: {served}"

    # The lock is for this client: the same account from another address signs in.
    other = web.request("GET", "/accounts/login/", headers={"X-Forwarded-For": "203.0.113.9"})
    other_cookie, other_token = _csrf(other[1], other[2])
    status = web.request(
        "POST",
        "/accounts/login/",
        body={"username": user.username, "password": PASSWORD, "csrfmiddlewaretoken": other_token},
        headers={**form_headers, "X-Forwarded-For": "203.0.113.9", "Cookie": f"csrftoken={other_cookie}"},
    )[0]
    assert status == 302
