import pytest
from django.utils import timezone

from risk.models import Rule


@pytest.fixture
def no_rules(db):
    """Only the rules the test adds (the shipped set is covered by the attack tests)."""
    Rule.objects.all().delete()


@pytest.fixture
def now():
    return timezone.now()


def rule(event, signal, comparison, threshold, outcome, **fields) -> Rule:
    return Rule.objects.create(
        event=event, signal=signal, comparison=comparison, threshold=threshold, outcome=outcome, **fields
    )
