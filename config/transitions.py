"""One small mechanism for every state machine: a map of allowed moves and one function applying it."""

from collections.abc import Iterable

from django.db import models


class StateError(Exception):
    """A transition was asked for from a state that does not allow it (or a racing writer won)."""

    def __init__(self, label: str, pk: object, to: str):
        super().__init__(f"{label} {pk} cannot move to {to!r} from its current state.")
        self.pk = pk
        self.to = to


class Transitions:
    """Allowed moves of one status field, written as `{source: {targets}}`."""

    def __init__(self, allowed: dict[str, Iterable[str]], field: str = "status"):
        self.allowed = {source: frozenset(targets) for source, targets in allowed.items()}
        self.field = field

    def sources(self, target: str) -> list[str]:
        return sorted(source for source, targets in self.allowed.items() if target in targets)

    def can(self, source: str, target: str) -> bool:
        return target in self.allowed.get(source, ())

    def apply(
        self,
        *,
        model: type[models.Model],
        pk: object,
        to: str,
        from_: Iterable[str] | None = None,
        **fields: object,
    ) -> None:
        """Compare-and-set: move row `pk` to `to` if it is in an allowed source state, else raise.

        `from_` narrows the sources further (it never widens them). Exactly one row must change, so two
        racing writers cannot both make the same move.
        """
        sources = self.sources(to)
        if from_ is not None:
            sources = [s for s in sources if s in set(from_)]
        changed = model._default_manager.filter(pk=pk, **{f"{self.field}__in": sources}).update(
            **{self.field: to}, **fields
        )
        if changed != 1:
            raise StateError(model._meta.label, pk, to)
