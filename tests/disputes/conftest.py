import pytest


@pytest.fixture(autouse=True)
def _no_rolling_reserve(settings):
    # The factories' merchants are new, so a rolling reserve would apply; it is tested in test_money_lifecycle.py.
    settings.RESERVE_PERCENT = 0
