"""The shop's refusal, `ShopError`: nothing changed; the message is for people, `code` for machines.

Every concern of the shop raises it. `StockFileError` (shop/stock_files.py) refuses a stock file the
same way; `shop.services` re-exports both.
"""

from core.errors import Refused


class ShopError(Refused):
    """A request the shop's rules refuse; the message is for the person, `code` for the API."""
