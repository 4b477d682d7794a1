"""The API's one error shape: `{"detail": "<message>", "code": "<machine code>"}` with a 4xx status."""

from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler


def _first_message(detail) -> tuple[str, str]:
    """Flatten DRF's nested validation errors into the first message, prefixed with its field."""
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        message, code = _first_message(value)
        return (message if field == "non_field_errors" else f"{field}: {message}"), code
    if isinstance(detail, list):
        return _first_message(detail[0])
    return str(detail), getattr(detail, "code", "invalid") or "invalid"


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException):
        message, code = _first_message(exc.detail)
        if isinstance(exc, exceptions.ValidationError):
            code = code if code not in {"invalid", "required", "null", "blank"} else "invalid"
        response.data = {"detail": message, "code": code}
    return response


class Conflict(exceptions.APIException):
    status_code = 409
    default_code = "conflict"


class Unavailable(exceptions.APIException):
    """A refusal that is not the caller's fault and may pass (e.g. no payment gateway): 503."""

    status_code = 503
    default_code = "unavailable"
