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


@pytest.fixture
def default_rules(db):
    """The shipped rule set, as migration 0002 loads it: a transactional test elsewhere in the run
    (tests/escrow/test_statement_budget.py) flushes every table, data-migration rows included."""
    from importlib import import_module

    from django.apps import apps

    import_module("risk.migrations.0002_default_rules").rules_add(apps, None)
