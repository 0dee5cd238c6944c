"""Which waiting job to admit next: priorities, fairness across namespaces, limits.

Pure: values in, a value out, no clock and no store, so the policy is
tested on its own (``tests/unit/job_scheduler/test_admission.py``).

The policy, in order:

1. **Limits.**  Nothing is admitted while ``max_running`` jobs hold a slot;
   a namespace with ``max_per_namespace`` slots taken is skipped.  A slot is
   held by a job with a coordinator (STARTING, RUNNING, STOPPING).  A
   PENDING job holds none: it waits for *clients*, not for capacity, and
   must never keep another job from running (DESIGN §4).
2. **Priority.**  Only the highest priority among the admissible jobs is
   considered.  Priorities are global on purpose (an operator's urgent job
   goes first whatever its namespace); the per-namespace limit still bounds
   how many slots one namespace can take, so a namespace that marks every
   job urgent cannot starve the others.
3. **Fairness.**  Among those, the namespace with the fewest slots taken
   goes first; ties go round-robin, to the first namespace after the one
   served last (in name order), so two busy namespaces alternate.
4. **FIFO.**  Within the namespace, the job queued longest ago (then by key,
   so the order is total).

The scheduler calls :func:`pick_next` repeatedly: after each pick it either
admits the job (and counts its slot with :meth:`Occupancy.plus`) or sets it
aside because too few clients match, and asks again without it, so a job
that cannot start never blocks the ones behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class Candidate:
    """A job waiting for admission (QUEUED or PENDING)."""

    key: str
    namespace: str
    priority: int
    queued_at: float


@dataclass(frozen=True)
class Limits:
    max_running: int
    max_per_namespace: int


@dataclass(frozen=True)
class Occupancy:
    """Slots taken: in all, and per namespace."""

    total: int = 0
    per_namespace: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, namespaces: Iterable[str]) -> Occupancy:
        """The occupancy of jobs holding slots, given each one's namespace."""
        counts: dict[str, int] = {}
        for namespace in namespaces:
            counts[namespace] = counts.get(namespace, 0) + 1
        return cls(sum(counts.values()), MappingProxyType(counts))

    def used(self, namespace: str) -> int:
        return self.per_namespace.get(namespace, 0)

    def plus(self, namespace: str) -> Occupancy:
        """This occupancy with one more slot taken in ``namespace``."""
        counts = dict(self.per_namespace)
        counts[namespace] = counts.get(namespace, 0) + 1
        return Occupancy(self.total + 1, MappingProxyType(counts))


def pick_next(
    candidates: Iterable[Candidate], occupancy: Occupancy, limits: Limits, last_namespace: str = ""
) -> Candidate | None:
    """The job to try next, or ``None`` when nothing may be admitted now."""
    if occupancy.total >= limits.max_running:
        return None
    admissible = [c for c in candidates if occupancy.used(c.namespace) < limits.max_per_namespace]
    if not admissible:
        return None
    top = max(c.priority for c in admissible)
    band = [c for c in admissible if c.priority == top]
    namespaces = sorted({c.namespace for c in band})
    chosen = min(namespaces, key=lambda ns: (occupancy.used(ns), _turn(ns, namespaces, last_namespace)))
    return min((c for c in band if c.namespace == chosen), key=lambda c: (c.queued_at, c.key))


def admission_order(
    candidates: Iterable[Candidate], occupancy: Occupancy, limits: Limits, last_namespace: str = ""
) -> list[Candidate]:
    """The jobs that would be admitted now, in order, if every one of them got its clients."""
    waiting = list(candidates)
    order: list[Candidate] = []
    while (chosen := pick_next(waiting, occupancy, limits, last_namespace)) is not None:
        order.append(chosen)
        waiting.remove(chosen)
        occupancy = occupancy.plus(chosen.namespace)
        last_namespace = chosen.namespace
    return order


def _turn(namespace: str, namespaces: list[str], last_namespace: str) -> int:
    """How many turns until ``namespace`` in a round-robin that served ``last_namespace`` last."""
    after = [ns for ns in namespaces if ns > last_namespace]
    rotation = after + [ns for ns in namespaces if ns <= last_namespace]
    return rotation.index(namespace)
