"""drf-spectacular's schema, plus what our views declare beside it: each operation's token scopes
(`required_scopes`, shown in its description and as `x-token-scopes`) and, on handlers wrapped in
`core.idempotency.idempotent`, the `Idempotency-Key` header."""

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiParameter
from rest_framework.pagination import CursorPagination

from core.idempotency import IDEMPOTENCY_HEADER, KEY_MAX_LENGTH
from core.scopes import scopes_description, scopes_needed

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=(
        f"Up to {KEY_MAX_LENGTH} printable ASCII characters. The first answer is stored and replayed for 24 "
        "hours to the same caller sending the same request (header `Idempotent-Replayed: true`); the same "
        "key with another request answers 422 `idempotency_mismatch`; while the first still runs, 409 "
        "`idempotency_in_progress`."
    ),
)


class AutoSchema(openapi.AutoSchema):
    def _handler(self):
        return getattr(self.view, self.method.lower(), None)

    def get_description(self) -> str:
        parts = [super().get_description() or "", scopes_description(self.view, self.method)]
        return "\n\n".join(part for part in parts if part)

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if getattr(self._handler(), "idempotent", False):
            parameters.append(IDEMPOTENCY_PARAMETER)
        return parameters

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        scopes = scopes_needed(self.view, self.method)
        if scopes:
            operation["x-token-scopes"] = list(scopes)
        self._document_page_errors(operation)
        return operation

    def _document_page_errors(self, operation: dict) -> None:
        """A paginated list refuses a cursor it did not make (400 `invalid_cursor`) or answers 404 for a
        page past the end (page numbers): say so, in the one error shape."""
        paginator = self._get_paginator()
        if paginator is None or self.method != "GET" or not self._is_list_view():
            return
        status, code = ("400", "invalid_cursor") if isinstance(paginator, CursorPagination) else ("404", "not_found")
        response = operation["responses"].get(status)
        if response is None:
            operation["responses"][status] = {
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}},
                "description": f"Codes: `{code}`",
            }
        elif f"`{code}`" not in response.get("description", ""):
            response["description"] = f"{response.get('description', 'Codes:')}, `{code}`"
