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
        mirror: models.Model | None = None,
        **fields: object,
    ) -> None:
        """Compare-and-set: move row `pk` to `to` if it is in an allowed source state, else raise.

        `from_` narrows the sources further (it never widens them). Exactly one row must change, so two
        racing writers cannot both make the same move. `mirror`, an instance of that row the caller
        keeps using, is given the new status and fields once the row has moved.
        """
        changed = self.update(queryset=model._default_manager.filter(pk=pk), to=to, from_=from_, **fields)
        if changed != 1:
            raise StateError(model._meta.label, pk, to)
        if mirror is not None:
            for name, value in {self.field: to, **fields}.items():
                setattr(mirror, name, value)

    def update(
        self, *, queryset: models.QuerySet, to: str, from_: Iterable[str] | None = None, **fields: object
    ) -> int:
        """Move every row of `queryset` that is in an allowed source state to `to`; returns how many moved.

        For sweeps and batches, where a row that another writer moved on first is simply left alone:
        the map still decides which states may move, the caller checks the count when it matters.
        """
        sources = self.sources(to)
        if from_ is not None:
            sources = [s for s in sources if s in set(from_)]
        return queryset.filter(**{f"{self.field}__in": sources}).update(**{self.field: to}, **fields)
