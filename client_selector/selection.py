"""Choosing N clients for a job: a pure function from records to a :class:`Selection`.

:func:`select_clients` filters the registered clients through a funnel
(registered → alive → matching the requirement → with a free task slot for
this job), orders the survivors, and takes ``ceil(count × redundancy)`` of
them.  It never waits and never touches state: the caller reserves what it
returns.

Decisions, and why:

* **All or nothing below ``count``.**  When fewer than ``count`` clients are
  eligible the answer is ``satisfied=False`` with an empty ``chosen`` list
  and a reason that shows the funnel, e.g. ``InsufficientClients 1/3: 4
  registered, 2 alive, 1 match runtime=pytorch datasets=[digits], 1 with a
  free task slot``.  Handing out (and so reserving) a partial set would let
  two waiting jobs each hold half of the clients the other needs, and neither
  would ever start.  A caller that can live with fewer asks again with a
  smaller ``count``.
* **Redundancy** over-selects to absorb stragglers: ``wanted =
  ceil(count × redundancy)``, computed on the product rounded to 9 decimals
  so that ``10 × 1.1`` is 11, not 12; fewer are returned when fewer match.
* **Order.**  Without ``random``: least recently selected first (never
  selected before anyone), ties broken by client id, which spreads work and
  is reproducible.  With ``random``: a shuffle of the id-sorted list by the
  given ``rng``, so a seeded generator gives the same answer every time
  whatever order the candidates arrive in.  ``untrained_first`` then moves
  the clients picked fewest times for this job to the front, stably.
* **Explicit lists** restrict the candidates to those ids; every listed id
  that cannot be chosen is named with why (not registered, lost, does not
  match, no free task slot).
"""

from __future__ import annotations

import math
import random as random_module
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from client_selector.registry import (
    ClientId,
    ClientRecord,
    JobId,
    Resources,
    free_slots,
    is_alive,
    times_picked,
)

MIN_REDUNDANCY = 1.0
MAX_REDUNDANCY = 2.0


@dataclass(frozen=True)
class Requirement:
    """What a job needs of a client; empty fields ask for nothing."""

    runtime: str = ""
    datasets: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = Resources()
    clients: tuple[str, ...] = ()

    def describe(self) -> str:
        """A short human form, e.g. ``runtime=pytorch datasets=[digits]``; ``any`` when empty."""
        parts = []
        if self.runtime:
            parts.append(f"runtime={self.runtime}")
        if self.datasets:
            parts.append(f"datasets=[{','.join(self.datasets)}]")
        if self.labels:
            parts.append("labels={" + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())) + "}")
        if self.resources.describe():
            parts.append(f"resources={self.resources.describe()}")
        if self.clients:
            parts.append(f"clients=[{','.join(self.clients)}]")
        return " ".join(parts) or "any"


@dataclass(frozen=True)
class Selection:
    """The answer to one selection; ``chosen`` is empty unless ``satisfied``."""

    chosen: list[tuple[ClientId, str]]
    matched: int  # eligible clients: alive, matching, with a free slot for the job
    wanted: int  # ceil(count × redundancy)
    satisfied: bool
    reason: str


def wanted_count(count: int, redundancy: float) -> int:
    """``ceil(count × redundancy)``, immune to float noise such as ``10 × 1.1 = 11.000000000000002``."""
    return math.ceil(round(count * redundancy, 9))


def mismatches(record: ClientRecord, requirement: Requirement) -> list[str]:
    """Why ``record`` does not meet ``requirement`` (explicit list aside); empty when it does."""
    why = []
    if requirement.runtime and requirement.runtime not in record.runtimes:
        why.append(f"no runtime {requirement.runtime}")
    missing = [name for name in requirement.datasets if name not in record.dataset_names]
    if missing:
        why.append(f"no dataset {','.join(missing)}")
    for key, value in sorted(requirement.labels.items()):
        if record.labels.get(key) != value:
            why.append(f"label {key}!={value}")
    short = record.resources.shortfalls(requirement.resources)
    if short:
        why.append(f"resources below {','.join(short)}")
    return why


def select_clients(
    candidates: Sequence[ClientRecord],
    requirement: Requirement,
    *,
    count: int,
    redundancy: float,
    random: bool,
    untrained_first: bool,
    job_id: JobId,
    rng: random_module.Random,
    now: float,
    heartbeat_timeout: float,
) -> Selection:
    """Choose up to ``ceil(count × redundancy)`` eligible clients for ``job_id`` (see module doc)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if not MIN_REDUNDANCY <= redundancy <= MAX_REDUNDANCY:
        raise ValueError("redundancy must be within [1, 2]")
    wanted = wanted_count(count, redundancy)
    listed = set(requirement.clients)
    alive = [r for r in candidates if is_alive(r, now, heartbeat_timeout)]
    matching = [r for r in alive if (not listed or r.client_id in listed) and not mismatches(r, requirement)]
    eligible = [r for r in matching if free_slots(r, job_id, now) > 0]
    notes = _notes(candidates, alive, requirement, job_id, now, heartbeat_timeout)
    if len(eligible) < count:
        reason = (
            f"InsufficientClients {len(eligible)}/{count}: {len(candidates)} registered, {len(alive)} alive, "
            f"{len(matching)} match {requirement.describe()}, {len(eligible)} with a free task slot"
        )
        return Selection(
            chosen=[], matched=len(eligible), wanted=wanted, satisfied=False, reason=reason + notes
        )
    ordered = _order(eligible, random=random, untrained_first=untrained_first, job_id=job_id, rng=rng)
    chosen = [
        (r.client_id, _why(r, requirement, random, untrained_first, job_id, now)) for r in ordered[:wanted]
    ]
    reason = f"selected {len(chosen)} of {len(eligible)} eligible (wanted {wanted})"
    return Selection(
        chosen=chosen, matched=len(eligible), wanted=wanted, satisfied=True, reason=reason + notes
    )


def _order(
    eligible: list[ClientRecord],
    *,
    random: bool,
    untrained_first: bool,
    job_id: JobId,
    rng: random_module.Random,
) -> list[ClientRecord]:
    if random:
        ordered = sorted(eligible, key=lambda r: r.client_id)
        rng.shuffle(ordered)
    else:
        ordered = sorted(eligible, key=lambda r: (r.last_selected_at, r.client_id))
    if untrained_first:
        ordered.sort(key=lambda r: times_picked(r, job_id))  # stable: keeps the order within a count
    return ordered


def _why(
    record: ClientRecord,
    requirement: Requirement,
    random: bool,
    untrained_first: bool,
    job_id: JobId,
    now: float,
) -> str:
    parts = []
    if requirement.clients:
        parts.append("in the explicit client list")
    if untrained_first:
        picked = times_picked(record, job_id)
        parts.append("never picked for this job" if picked == 0 else f"picked {picked}x for this job")
    if random:
        parts.append("random draw")
    elif record.last_selected_at > 0:
        parts.append(f"least recently used (last picked {max(0.0, now - record.last_selected_at):.0f}s ago)")
    else:
        parts.append("least recently used (never picked)")
    slots = free_slots(record, job_id, now)
    parts.append(f"{slots}/{record.max_parallel_tasks} task slots free")
    parts.append(f"matches {requirement.describe()}")
    return "; ".join(parts)


def _notes(
    candidates: Sequence[ClientRecord],
    alive: list[ClientRecord],
    requirement: Requirement,
    job_id: JobId,
    now: float,
    timeout: float,
) -> str:
    """Hints for an operator: the most common mismatches and the unavailable listed clients."""
    notes = []
    listed = set(requirement.clients)
    counts = Counter(
        reason for r in alive if not listed or r.client_id in listed for reason in mismatches(r, requirement)
    )
    if counts:
        notes.append("not matching: " + ", ".join(f"{n}x {reason}" for reason, n in counts.most_common(3)))
    if requirement.clients:
        by_id = {r.client_id: r for r in candidates}
        unavailable = []
        for client_id in dict.fromkeys(requirement.clients):
            record = by_id.get(ClientId(client_id))
            if record is None:
                unavailable.append(f"{client_id} (not registered)")
            elif not is_alive(record, now, timeout):
                unavailable.append(f"{client_id} (lost)")
            elif mismatches(record, requirement):
                unavailable.append(f"{client_id} ({'; '.join(mismatches(record, requirement))})")
            elif free_slots(record, job_id, now) == 0:
                unavailable.append(f"{client_id} (no free task slot)")
        if unavailable:
            notes.append("unavailable from the explicit list: " + ", ".join(unavailable))
    return "".join(f"; {note}" for note in notes)
