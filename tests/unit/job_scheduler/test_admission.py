"""The admission policy: limits, priorities, fairness across namespaces, FIFO."""

from __future__ import annotations

from job_scheduler.admission import Candidate, Limits, Occupancy, admission_order, pick_next

LIMITS = Limits(max_running=4, max_per_namespace=2)


def job(key: str, priority: int = 0, queued_at: float = 0.0) -> Candidate:
    namespace = key.split("/")[0]
    return Candidate(key, namespace, priority, queued_at)


def keys(order: list[Candidate]) -> list[str]:
    return [c.key for c in order]


def test_nothing_is_admitted_when_the_global_limit_is_reached() -> None:
    full = Occupancy.of(["a", "b", "c", "d"])
    assert pick_next([job("e/1")], full, LIMITS) is None


def test_a_namespace_at_its_limit_is_skipped_but_others_are_not() -> None:
    occupancy = Occupancy.of(["a", "a"])
    assert keys(admission_order([job("a/1"), job("b/1")], occupancy, LIMITS)) == ["b/1"]


def test_the_global_limit_caps_how_many_are_admitted_in_one_pass() -> None:
    waiting = [job(f"{ns}/{i}", queued_at=i) for ns in "abc" for i in range(3)]
    order = admission_order(waiting, Occupancy(), LIMITS)
    assert len(order) == 4
    assert max(sum(1 for c in order if c.namespace == ns) for ns in "abc") <= 2


def test_namespaces_take_turns_instead_of_the_oldest_namespace_taking_every_slot() -> None:
    waiting = [job("a/1", queued_at=1), job("a/2", queued_at=2), job("a/3", queued_at=3),
               job("b/1", queued_at=10), job("c/1", queued_at=20)]
    order = admission_order(waiting, Occupancy(), Limits(max_running=10, max_per_namespace=10))
    assert keys(order) == ["a/1", "b/1", "c/1", "a/2", "a/3"]


def test_the_namespace_with_fewer_running_jobs_goes_first() -> None:
    occupancy = Occupancy.of(["a"])
    assert pick_next([job("a/1", queued_at=0), job("b/1", queued_at=5)], occupancy, LIMITS) == job("b/1", 0, 5)


def test_round_robin_starts_after_the_namespace_served_last() -> None:
    waiting = [job("a/1"), job("b/1"), job("c/1")]
    assert pick_next(waiting, Occupancy(), LIMITS, last_namespace="a") == job("b/1")
    assert pick_next(waiting, Occupancy(), LIMITS, last_namespace="c") == job("a/1")


def test_higher_priority_goes_first_across_namespaces() -> None:
    waiting = [job("a/old", queued_at=0), job("b/urgent", priority=10, queued_at=100)]
    assert keys(admission_order(waiting, Occupancy(), LIMITS)) == ["b/urgent", "a/old"]


def test_priority_still_respects_the_per_namespace_limit() -> None:
    waiting = [job("a/1", 100, 1), job("a/2", 100, 2), job("a/3", 100, 3), job("b/low", 0, 0)]
    assert keys(admission_order(waiting, Occupancy(), LIMITS)) == ["a/1", "a/2", "b/low"]


def test_fifo_within_a_namespace_and_priority() -> None:
    waiting = [job("a/late", queued_at=5), job("a/early", queued_at=1), job("a/tie-b", queued_at=3),
               job("a/tie-a", queued_at=3)]
    order = admission_order(waiting, Occupancy(), Limits(max_running=10, max_per_namespace=10))
    assert keys(order) == ["a/early", "a/tie-a", "a/tie-b", "a/late"]


def test_a_job_set_aside_does_not_block_the_next_one() -> None:
    """The supervisor removes a job without clients from the pool and asks again."""
    pool = [job("a/no-clients", queued_at=0), job("a/ok", queued_at=1)]
    first = pick_next(pool, Occupancy(), LIMITS)
    assert first is not None and first.key == "a/no-clients"
    pool.remove(first)
    assert pick_next(pool, Occupancy(), LIMITS) == job("a/ok", 0, 1)


def test_occupancy_counts_per_namespace() -> None:
    occupancy = Occupancy.of(["a", "b", "a"]).plus("c")
    assert occupancy.total == 4
    assert (occupancy.used("a"), occupancy.used("b"), occupancy.used("c"), occupancy.used("z")) == (2, 1, 1, 0)
