"""Cursor pagination for the API's lists: stable under inserts (a new row never shifts a page), and no
COUNT over a large table. Answers `{"next", "previous", "results"}`; follow `next` until it is null."""

from rest_framework.pagination import CursorPagination


class NewestFirstCursor(CursorPagination):
    ordering = "-pk"  # unique and never changes: the cursor's position
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
