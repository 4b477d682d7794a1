"""`Idempotency-Key` for API calls that move money or stock: a retried request does the work once.

Wrap a DRF view's handler with `@idempotent`. With the header, the caller (the signed-in user: every
token and session of one account share the keys) first claims the key: a row inserted in its own
short transaction, whose unique constraint on (caller, key) lets only one request through.

- first time: the claim commits, the work runs, and its answer (status and JSON body) is stored;
  a 5xx or a crash releases the claim instead, so a retry can do the work;
- same key, same request (method, path, query and body), within 24 hours: the stored answer is
  replayed as it was, with `Idempotent-Replayed: true`, and nothing runs again;
- same key, another request: 422 `idempotency_mismatch`, nothing runs;
- same key while the first request still runs: 409 `idempotency_in_progress` at once (no waiting:
  a request worker is never parked behind another; the client retries a moment later and gets the
  replay);
- after 24 hours the key is free again (the old row is replaced; `idempotency_keys_purge` deletes
  the rest).

A process killed between the work and storing its answer leaves the key "in progress" (409) until its
24 hours pass: the work may have committed, so the shop never guesses and runs it again; the caller
checks (e.g. lists its withdrawals) and goes on with a new key.

Every answer below 500 is stored, refusals too: a refusal changed nothing, and replaying it is what
"the first answer" means; a corrected request takes a new key. Without the header nothing changes.
"""

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from core.errors import Refused
from core.models import IdempotencyKey

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX_LENGTH = 255
REPLAY_WINDOW = timedelta(hours=24)


class IdempotencyRefused(Refused):
    code_statuses = {
        **Refused.code_statuses,
        "idempotency_mismatch": 422,
        "idempotency_in_progress": 409,
        "bad_idempotency_key": 400,
    }


def request_fingerprint(request) -> str:
    """SHA-256 of the method, path with query, and the body (parsed JSON or form data compared as
    data, so key order and whitespace do not matter; anything else as bytes)."""
    digest = hashlib.sha256(f"{request.method} {request.get_full_path()}\n".encode())
    content_type = (request.content_type or "").split(";")[0].strip()
    if content_type in {"application/json", "application/x-www-form-urlencoded"}:
        data = request.data
        data = data.dict() if hasattr(data, "dict") else data
        digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    else:
        digest.update(content_type.encode() + b"\n" + request.body)
    return digest.hexdigest()


def _caller_of(request) -> str | None:
    user = getattr(request, "user", None)
    return f"user:{user.pk}" if user is not None and user.is_authenticated else None


def idempotency_claim(*, caller: str, key: str, fingerprint: str, now: datetime) -> IdempotencyKey | None:
    """Claim `key` for `caller`: the new row (the work may run), or None when the first answer is
    there to replay (read it with `idempotency_stored`). Refused with `IdempotencyRefused`
    (`idempotency_mismatch`, `idempotency_in_progress`) otherwise. Commits on its own."""
    for _attempt in range(3):
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(caller=caller, key=key, fingerprint=fingerprint, created_at=now)
        except IntegrityError:
            pass
        existing = IdempotencyKey.objects.filter(caller=caller, key=key).first()
        if existing is None:
            continue  # released by a failed first request a moment ago: claim it again
        if existing.created_at <= now - REPLAY_WINDOW:
            IdempotencyKey.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        if existing.fingerprint != fingerprint:
            raise IdempotencyRefused(
                _("This Idempotency-Key was used with another request. Use a new key for a new request."),
                code="idempotency_mismatch",
            )
        if existing.response_code is None:
            raise IdempotencyRefused(
                _("A request with this Idempotency-Key is still running. Retry in a moment."),
                code="idempotency_in_progress",
            )
        return None
    raise IdempotencyRefused(
        _("A request with this Idempotency-Key is still running. Retry in a moment."), code="idempotency_in_progress"
    )


def idempotency_stored(*, caller: str, key: str) -> IdempotencyKey:
    return IdempotencyKey.objects.get(caller=caller, key=key)


def idempotency_complete(*, claim: IdempotencyKey, code: int, body: object, now: datetime) -> None:
    """Store the first answer for replay."""
    IdempotencyKey.objects.filter(pk=claim.pk).update(response_code=code, response_body=body, completed_at=now)


def idempotency_release(*, claim: IdempotencyKey) -> None:
    """Give the key back (the work failed with nothing done): a retry may claim it."""
    IdempotencyKey.objects.filter(pk=claim.pk, response_code__isnull=True).delete()


def idempotency_keys_purge(*, now: datetime) -> int:
    """Delete keys past the replay window; returns how many."""
    deleted, _by_model = IdempotencyKey.objects.filter(created_at__lte=now - REPLAY_WINDOW).delete()
    return deleted


def idempotent(handler: Callable | None = None, *, fingerprint: Callable = request_fingerprint):
    """Make a DRF view handler (`def post(self, request, …)`) honour `Idempotency-Key` (see above).

    `fingerprint(request) -> str` says what "the same request" is; a view whose body is streamed
    (stock uploads) passes its own."""

    def decorate(method):
        @wraps(method)
        def wrapper(self, request, *args, **kwargs):
            key = request.headers.get(IDEMPOTENCY_HEADER)
            caller = _caller_of(request)
            if key is None or caller is None:
                return method(self, request, *args, **kwargs)
            key = key.strip()
            if not key or len(key) > KEY_MAX_LENGTH or not key.isprintable() or not key.isascii():
                raise IdempotencyRefused(
                    _("An Idempotency-Key is 1 to %(max)s printable ASCII characters.") % {"max": KEY_MAX_LENGTH},
                    code="bad_idempotency_key",
                )
            claim = idempotency_claim(caller=caller, key=key, fingerprint=fingerprint(request), now=timezone.now())
            if claim is None:
                stored = idempotency_stored(caller=caller, key=key)
                return Response(stored.response_body, status=stored.response_code, headers={REPLAYED_HEADER: "true"})
            try:
                try:
                    response = method(self, request, *args, **kwargs)
                except Exception as error:
                    response = self.handle_exception(error)  # re-raises what is not an API error
            except BaseException:
                idempotency_release(claim=claim)
                raise
            if response.status_code >= 500:
                idempotency_release(claim=claim)
                return response
            body = None if response.data is None else json.loads(JSONRenderer().render(response.data))
            idempotency_complete(claim=claim, code=response.status_code, body=body, now=timezone.now())
            return response

        wrapper.idempotent = True
        return wrapper

    return decorate(handler) if handler is not None else decorate
