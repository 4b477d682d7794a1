"""Cursor pagination for the API's lists: stable under inserts (a new row never shifts a page), and no
COUNT over a large table. Answers `{"next", "previous", "results"}`; follow `next` until it is null."""

from django.utils.translation import gettext as _
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class NewestFirstCursor(CursorPagination):
    ordering = "-pk"  # unique and never changes: the cursor's position
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request):
        """A cursor that is not one of ours is bad input (400 `invalid_cursor`), not a missing page."""
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": [_("Invalid cursor.")]}, code="invalid_cursor") from None
