"""The API's one error shape: `{"detail": "<message>", "code": "<machine code>"}` with a 4xx status."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import Refused
from core.ratelimit import RateLimited
from core.transitions import StateError


def _first_message(detail) -> tuple[str, str]:
    """Flatten DRF's nested validation errors into the first message, prefixed with its field."""
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        message, code = _first_message(value)
        return (message if field == "non_field_errors" else f"{field}: {message}"), code
    if isinstance(detail, list):
        return _first_message(detail[0])
    return str(detail), getattr(detail, "code", "invalid") or "invalid"


def _as_api_exception(exc: Exception) -> Exception:
    """The service layer's refusals, as the API answers them; anything else unchanged."""
    if isinstance(exc, Refused):
        field = exc.code_fields.get(exc.code)
        error = exceptions.APIException({field: [str(exc)]} if field else str(exc), code=exc.code)
        error.status_code = exc.status
        return error
    if isinstance(exc, RateLimited):
        return exceptions.Throttled(wait=exc.retry_after)  # 429 with Retry-After
    # Django's own (selectors raise Http404 for what the caller may not see), in the same shape as DRF's.
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, StateError):
        return Conflict(_("This cannot be done in its current state."), code="bad_state")
    return exc


def exception_handler(exc, context):
    """Every API error as `{"detail", "code"}`: DRF's own, and any `Refused`, `RateLimited` (429) or
    `StateError` (409) a view lets through, so views do not translate errors one by one."""
    extra = exc.extra if isinstance(exc, Refused) else {}
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException):
        message, code = _first_message(exc.detail)
        if isinstance(exc, exceptions.ValidationError):
            code = code if code not in {"invalid", "required", "null", "blank"} else "invalid"
        response.data = {"detail": message, "code": code, **extra}
    return response


class Conflict(exceptions.APIException):
    status_code = 409
    default_code = "conflict"


class Unavailable(exceptions.APIException):
    """A refusal that is not the caller's fault and may pass (e.g. no payment gateway): 503."""

    status_code = 503
    default_code = "unavailable"


class ApiError(serializers.Serializer):
    """The body of every error answer."""

    detail = serializers.CharField(help_text="For people; translated.")
    code = serializers.CharField(help_text="For programs; one of the codes listed with the status.")


def error_responses(codes: dict[int, list[str]]) -> dict[int, OpenApiResponse]:
    """Schema entries for an endpoint's error answers: status → the `code`s it can carry."""
    return {
        status: OpenApiResponse(ApiError, description="Codes: " + ", ".join(f"`{code}`" for code in sorted(names)))
        for status, names in codes.items()
    }


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@authentication_classes([])
@permission_classes([AllowAny])
def not_found(request, *args, **kwargs):
    """The API's last route: any other path under it (`orders/abc/` too) is a JSON 404, not an HTML page."""
    raise exceptions.NotFound


def errors_merge(*codes: dict[int, list[str]]) -> dict[int, list[str]]:
    """Several `status → codes` maps as one (an endpoint's own codes beside the shared ones)."""
    merged: dict[int, list[str]] = {}
    for mapping in codes:
        for status, names in mapping.items():
            merged[status] = sorted({*merged.get(status, []), *names})
    return merged
