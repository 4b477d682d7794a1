"""CPU per request of the purchase's API calls, through the short chain (core/sessionless.py) and
through the full MIDDLEWARE as before it: the same requests, called straight on two WSGI handlers in
this process (no server, no network), timed with `time.process_time()`.

    DATABASE_URL=postgres://…/cardshop [CACHE_URL=redis://127.0.0.1:6379/12] \
        .venv/bin/python bench/sessionless_cpu.py [N] [--rounds R]

Creates a scratch test database (test_<name>, dropped at the end), one product, and for each kind of
request N calls per handler and round, the handlers taking turns request by request:
- `keys poll`: `GET /api/v1/orders/<id>/keys/` with the order token, the order not yet paid (409);
- `checkout`: `POST /api/v1/orders/`, each a new guest from an address of its own;
- `webhook`: the sandbox's signed `payment.succeeded`, each for its own order (the delivery task's
  publish on commit is replaced by a no-op: bench/enqueue_cpu.py measures it).
Prints the median over rounds of CPU µs per request for each handler and their difference.
"""

import argparse
import io
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("CHECKOUT_RATE_LIMIT", "100000000/min")
os.environ.setdefault("KEY_REVEAL_RATE_LIMIT", "100000000/min")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("CELERY_BROKER_URL", "memory://")  # the e-mails and notices queued on commit stay in memory

if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
    sys.exit("Set DATABASE_URL=postgres://… (the benchmark measures PostgreSQL).")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

SHORT_CHAIN = "core.sessionless.SessionlessChainMiddleware"


def environ(method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None, ip: str) -> dict:
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": ip,
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json" if body else "",
    }
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def call(handler, env: dict, expected: int) -> None:
    statuses = []
    response = handler(env, lambda status, headers, exc_info=None: statuses.append(status))
    body = b"".join(response)
    response.close()
    if not statuses[0].startswith(str(expected)):
        raise AssertionError(f"{env['PATH_INFO']}: {statuses[0]} {body[:300]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=500, help="requests per kind, handler and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(args.n, args.rounds)
    finally:
        connection.close()
        connection.creation.destroy_test_db(name, verbosity=0)


def run(n: int, rounds: int) -> None:
    from django.core.cache import cache
    from django.utils import timezone

    from escrow import delivery, services, tasks
    from tests import factories

    if settings.CACHE_URL.startswith("redis"):
        cache._cache.get_client(write=True).flushdb()
    tasks.order_link_email_task.delay = lambda **kwargs: None
    delivery.order_delivery_enqueue = lambda **kwargs: None
    services.order_delivery_enqueue = lambda **kwargs: None
    handlers = {"short chain": WSGIHandler()}
    with override_settings(MIDDLEWARE=[path for path in settings.MIDDLEWARE if path != SHORT_CHAIN]):
        handlers["full chain"] = WSGIHandler()
    product = factories.product_create(stock=(4 * n + 40) * rounds + 10, price=1234)
    poll = factories.order_place(product=product, email="poller@example.com")
    poll_headers = {"X-Order-Token": poll.access_token}
    counter = iter(range(10**9))

    def address() -> str:
        i = next(counter)
        return f"10.{i // 62500 % 250}.{i // 250 % 250}.{i % 250 + 1}"

    def keys_poll(handler):
        env = environ("GET", f"/api/v1/orders/{poll.order.pk}/keys/", headers=poll_headers, ip="10.255.0.1")
        call(handler, env, 409)

    def checkout(handler):
        i = next(counter)
        body = json.dumps({"product": product.pk, "quantity": 1, "email": f"guest{i}@example.com"}).encode()
        call(handler, environ("POST", "/api/v1/orders/", body=body, ip=address()), 201)

    unpaid = []

    def webhook(handler):
        body, headers = factories.signed_webhook(payment=unpaid.pop().payment)
        call(handler, environ("POST", "/payments/sandbox/webhook/", body=body, headers=headers, ip="10.255.0.2"), 200)

    figures = {kind: {label: [] for label in handlers} for kind in ("keys poll", "checkout", "webhook")}
    for _ in range(rounds):
        unpaid[:] = [
            services.order_place(
                product_pk=product.pk,
                quantity=1,
                email=f"payer{next(counter)}@example.com",
                buyer=None,
                now=timezone.now(),
            )
            for _ in range(2 * n + 10)
        ]
        for kind, request in (("keys poll", keys_poll), ("checkout", checkout), ("webhook", webhook)):
            for handler in handlers.values():
                for _ in range(5):  # warm
                    request(handler)
            spent = dict.fromkeys(handlers, 0.0)
            for number in range(n):  # the handlers take turns request by request: the database grows for both
                labels = list(handlers) if number % 2 == 0 else list(reversed(handlers))
                for label in labels:
                    started = time.process_time()
                    request(handlers[label])
                    spent[label] += time.process_time() - started
            for label, seconds in spent.items():
                figures[kind][label].append(seconds / n * 1e6)
    print(f"CPU µs per request, median of {rounds} rounds of {n} (this process: handler, middleware, view, psycopg2)")
    for kind, by_label in figures.items():
        short, full = (statistics.median(by_label[label]) for label in ("short chain", "full chain"))
        print(f"  {kind:10} full chain {full:7.0f}   short chain {short:7.0f}   saved {full - short:5.0f} µs")


if __name__ == "__main__":
    main()
