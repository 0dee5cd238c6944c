"""Choosing clients for a job: every requirement kind, redundancy, order, explicit lists, reasons."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from client_selector.registry import (
    ClientId,
    ClientRecord,
    DatasetInfo,
    JobId,
    Registration,
    Resources,
    disconnected,
    register,
    reserve,
)
from client_selector.selection import Requirement, Selection, select_clients, wanted_count

NOW = 1000.0
TIMEOUT = 10.0
JOB = JobId("ns/job")


def client(
    name: str,
    *,
    runtimes: tuple[str, ...] = ("pytorch",),
    datasets: tuple[str, ...] = ("digits",),
    labels: dict[str, str] | None = None,
    resources: Resources = Resources(cpus=4, memory_mb=8000),
    slots: int = 1,
    alive: bool = True,
) -> ClientRecord:
    record = register(
        None,
        Registration(
            client_id=ClientId(name),
            runtimes=runtimes,
            datasets=tuple(DatasetInfo(d, 100) for d in datasets),
            labels=labels or {},
            resources=resources,
            max_parallel_tasks=slots,
        ),
        NOW - 1,
    )
    return record if alive else disconnected(record)


def select(
    candidates: list[ClientRecord],
    requirement: Requirement = Requirement(),
    *,
    count: int = 1,
    redundancy: float = 1.0,
    random_order: bool = False,
    untrained_first: bool = False,
    job: JobId = JOB,
    seed: int = 7,
) -> Selection:
    return select_clients(
        candidates,
        requirement,
        count=count,
        redundancy=redundancy,
        random=random_order,
        untrained_first=untrained_first,
        job_id=job,
        rng=random.Random(seed),
        now=NOW,
        heartbeat_timeout=TIMEOUT,
    )


def ids(selection: Selection) -> list[str]:
    return [client_id for client_id, _ in selection.chosen]


def test_runtime_requirement_keeps_only_clients_with_that_runtime() -> None:
    clients = [client("a", runtimes=("tensorflow",)), client("b", runtimes=("pytorch", "tensorflow"))]
    assert ids(select(clients, Requirement(runtime="pytorch"))) == ["b"]


def test_dataset_requirement_needs_every_named_dataset() -> None:
    clients = [client("a", datasets=("digits",)), client("b", datasets=("digits", "iris"))]
    assert ids(select(clients, Requirement(datasets=("digits", "iris")))) == ["b"]


def test_label_requirement_needs_equal_values() -> None:
    clients = [client("a", labels={"region": "us"}), client("b", labels={"region": "eu", "tier": "gold"})]
    assert ids(select(clients, Requirement(labels={"region": "eu"}))) == ["b"]


def test_resource_requirement_is_a_minimum_per_field() -> None:
    clients = [
        client("a", resources=Resources(cpus=2, memory_mb=64000)),
        client("b", resources=Resources(cpus=8, memory_mb=16000, gpus=1)),
    ]
    assert ids(select(clients, Requirement(resources=Resources(cpus=4, gpus=1)))) == ["b"]


def test_explicit_list_restricts_the_choice_and_names_the_missing_ones() -> None:
    clients = [client("a"), client("b"), client("c", alive=False), client("d", runtimes=("tensorflow",))]
    selection = select(clients, Requirement(runtime="pytorch", clients=("b", "c", "d", "zz")), count=1)
    assert ids(selection) == ["b"] and selection.satisfied
    assert "c (lost)" in selection.reason and "zz (not registered)" in selection.reason
    assert "d (no runtime pytorch)" in selection.reason
    assert "in the explicit client list" in selection.chosen[0][1]


def test_lost_clients_are_never_selected() -> None:
    stale = replace(client("stale"), last_seen=NOW - TIMEOUT - 0.1)
    selection = select([client("gone", alive=False), stale, client("ok")], count=1, redundancy=2.0)
    assert ids(selection) == ["ok"]


def test_redundancy_asks_for_the_ceiling_of_count_times_redundancy() -> None:
    assert wanted_count(3, 1.5) == 5
    assert wanted_count(10, 1.1) == 11, "float noise (11.000000000000002) must not round up to 12"
    assert wanted_count(3, 1.0) == 3 and wanted_count(3, 2.0) == 6
    clients = [client(f"c{n}") for n in range(10)]
    selection = select(clients, count=3, redundancy=1.5)
    assert len(selection.chosen) == 5 and selection.wanted == 5 and selection.matched == 10


def test_redundancy_is_capped_by_the_clients_that_match() -> None:
    selection = select([client("a"), client("b"), client("c"), client("d")], count=3, redundancy=2.0)
    assert selection.satisfied and len(selection.chosen) == 4 and selection.wanted == 6


def test_too_few_matches_is_an_explicit_answer_showing_the_funnel() -> None:
    clients = [
        client("a"),
        client("b", datasets=("iris",)),
        client("c", alive=False),
        client("d", alive=False),
    ]
    selection = select(clients, Requirement(runtime="pytorch", datasets=("digits",)), count=3)
    assert not selection.satisfied and selection.chosen == [] and selection.matched == 1
    assert selection.reason.startswith(
        "InsufficientClients 1/3: 4 registered, 2 alive, 1 match runtime=pytorch datasets=[digits], "
        "1 with a free task slot"
    )
    assert "1x no dataset digits" in selection.reason


def test_clients_without_a_free_task_slot_are_not_eligible_for_another_job() -> None:
    busy = reserve(client("busy"), JobId("ns/other"), 1, NOW, 60.0)
    selection = select([busy, client("free")], count=2)
    assert not selection.satisfied and "2 match any, 1 with a free task slot" in selection.reason
    assert ids(select([busy, client("free")], count=1)) == ["free"]


def test_a_client_reserved_by_the_same_job_stays_eligible_for_it() -> None:
    mine = reserve(client("mine"), JOB, 1, NOW, 60.0)
    assert ids(select([mine], count=1)) == ["mine"]


def test_without_random_the_least_recently_used_come_first() -> None:
    used_early = replace(client("a"), last_selected_at=NOW - 100)
    used_late = replace(client("b"), last_selected_at=NOW - 10)
    never = client("c")
    selection = select([used_late, used_early, never], count=3)
    assert ids(selection) == ["c", "a", "b"]
    assert "never picked" in selection.chosen[0][1] and "last picked 100s ago" in selection.chosen[1][1]


def test_random_order_is_deterministic_for_a_seed_whatever_the_input_order() -> None:
    clients = [client(f"c{n:02d}") for n in range(20)]
    first = ids(select(clients, count=5, random_order=True, seed=42))
    again = ids(select(list(reversed(clients)), count=5, random_order=True, seed=42))
    other = ids(select(clients, count=5, random_order=True, seed=43))
    assert first == again and first != other
    assert first != [f"c{n:02d}" for n in range(5)]


def test_untrained_first_prefers_clients_the_job_has_not_picked() -> None:
    picked_twice = reserve(reserve(client("a"), JOB, 1, NOW - 50, 1.0), JOB, 2, NOW - 40, 1.0)
    picked_once = reserve(client("b"), JOB, 1, NOW - 30, 1.0)
    picked_for_other_job = reserve(client("c"), JobId("ns/other"), 1, NOW - 1, 1.0)
    selection = select([picked_twice, picked_once, picked_for_other_job], count=3, untrained_first=True)
    assert ids(selection) == ["c", "b", "a"]
    assert "never picked for this job" in selection.chosen[0][1]
    plain = select([picked_twice, picked_once, picked_for_other_job], count=3)
    assert ids(plain) == ["a", "b", "c"], "without untrainedFirst, least recently used wins"


def test_untrained_first_combines_with_random_order() -> None:
    trained = [reserve(client(f"t{n}"), JOB, 1, NOW - 5, 1.0) for n in range(5)]
    fresh = [client(f"f{n}") for n in range(5)]
    chosen = ids(select(trained + fresh, count=5, random_order=True, untrained_first=True))
    assert sorted(chosen) == [f"f{n}" for n in range(5)]


@pytest.mark.parametrize(("count", "redundancy"), [(0, 1.0), (1, 0.99), (1, 2.01), (1, float("nan"))])
def test_out_of_range_arguments_are_refused(count: int, redundancy: float) -> None:
    with pytest.raises(ValueError):
        select([client("a")], count=count, redundancy=redundancy)
