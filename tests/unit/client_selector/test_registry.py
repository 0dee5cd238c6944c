"""The registry's pure rules: liveness, reservations with expiry, task slots, picks, retention and sources."""

from __future__ import annotations

from client_selector.registry import (
    MAX_REMEMBERED_JOBS,
    ClientId,
    ClientRecord,
    DatasetInfo,
    JobId,
    Registration,
    Resources,
    active_reservations,
    disconnected,
    expires_at,
    free_slots,
    is_alive,
    is_expired,
    liveness,
    over_source_cap,
    prune_expired,
    register,
    release,
    reserve,
    reserved_by,
    seen,
    times_picked,
)

A = JobId("ns/a")
B = JobId("ns/b")


def connected_client(now: float = 100.0, slots: int = 1) -> ClientRecord:
    return register(
        None, Registration(client_id=ClientId("c1"), runtimes=("pytorch",), max_parallel_tasks=slots), now
    )


def test_a_registered_client_is_alive_until_its_heartbeat_timeout_passes() -> None:
    record = connected_client(now=100.0)
    assert is_alive(record, 110.0, timeout=10.0)
    assert liveness(record, 110.01, timeout=10.0) == "lost"


def test_a_heartbeat_keeps_a_client_alive_and_records_its_running_tasks() -> None:
    record = seen(connected_client(now=100.0), 109.0, running_tasks=2)
    assert is_alive(record, 118.0, timeout=10.0) and record.running_tasks == 2
    assert seen(record, 105.0).last_seen == 109.0, "an out-of-order clock reading never moves last_seen back"


def test_a_disconnected_client_is_lost_even_with_a_fresh_heartbeat() -> None:
    record = disconnected(connected_client(now=100.0))
    assert liveness(record, 100.0, timeout=10.0) == "lost"


def test_re_registration_keeps_reservations_and_history_but_takes_new_declarations() -> None:
    record = reserve(disconnected(connected_client()), A, 1, now=100.0, seconds=60.0)
    again = register(
        record,
        Registration(
            client_id=ClientId("c1"), runtimes=("tensorflow",), datasets=(DatasetInfo("digits", 600),)
        ),
        now=120.0,
    )
    assert again.connected and again.runtimes == ("tensorflow",) and again.dataset_names == {"digits"}
    assert reserved_by(again, 120.0) == (A,) and times_picked(again, A) == 1


def test_a_reservation_holds_until_its_expiry_and_not_a_moment_longer() -> None:
    record = reserve(connected_client(), A, 1, now=100.0, seconds=60.0)
    assert reserved_by(record, 159.9) == (A,)
    assert reserved_by(record, 160.0) == ()
    assert prune_expired(record, 160.0).reservations == ()
    assert prune_expired(record, 150.0) is record


def test_selecting_again_for_the_same_job_renews_instead_of_taking_a_second_slot() -> None:
    record = reserve(connected_client(slots=2), A, 1, now=100.0, seconds=60.0)
    record = reserve(record, A, 2, now=150.0, seconds=60.0)
    assert len(active_reservations(record, 150.0)) == 1
    assert active_reservations(record, 200.0)[0].round == 2
    assert times_picked(record, A) == 2 and record.last_selected_at == 150.0


def test_free_slots_are_the_maximum_minus_other_jobs_reservations() -> None:
    record = reserve(connected_client(slots=2), A, 1, now=100.0, seconds=60.0)
    assert free_slots(record, A, 100.0) == 2, "a job's own reservation does not cost it a slot"
    assert free_slots(record, B, 100.0) == 1
    record = reserve(record, B, 1, now=100.0, seconds=60.0)
    assert free_slots(record, JobId("ns/c"), 100.0) == 0
    assert free_slots(record, JobId("ns/c"), 161.0) == 2, "expired reservations free their slots"


def test_release_drops_only_that_jobs_reservation() -> None:
    record = reserve(reserve(connected_client(slots=2), A, 1, 100.0, 60.0), B, 1, 100.0, 60.0)
    assert reserved_by(release(record, A), 100.0) == (B,)


def test_picks_remember_only_the_most_recent_jobs() -> None:
    record = connected_client()
    for n in range(MAX_REMEMBERED_JOBS + 5):
        record = release(reserve(record, JobId(f"ns/j{n}"), 1, 100.0, 1.0), JobId(f"ns/j{n}"))
    assert len(record.picks) == MAX_REMEMBERED_JOBS
    assert times_picked(record, JobId("ns/j0")) == 0
    assert times_picked(record, JobId(f"ns/j{MAX_REMEMBERED_JOBS + 4}")) == 1


def test_resources_name_what_they_lack() -> None:
    have = Resources(cpus=4, memory_mb=8000, gpus=0)
    assert have.shortfalls(Resources(cpus=2, memory_mb=4000)) == []
    assert have.shortfalls(Resources(cpus=8, gpus=1)) == ["cpus>=8", "gpus>=1"]


def test_a_lost_client_expires_once_the_retention_period_has_passed_since_it_was_last_seen() -> None:
    record = disconnected(seen(register(None, Registration(ClientId("c1")), now=10.0), now=50.0))
    assert expires_at(record, retention=100.0) == 150.0
    assert not is_expired(record, now=149.0, retention=100.0)
    assert is_expired(record, now=150.0, retention=100.0)


def test_a_connected_client_never_expires_however_quiet() -> None:
    record = register(None, Registration(ClientId("c1")), now=10.0)
    assert not is_expired(record, now=10_000.0, retention=100.0)


def test_a_source_may_register_up_to_its_cap_of_distinct_ids_and_its_known_ids_again() -> None:
    records = [register(None, Registration(ClientId(f"c{n}")), now=1.0, source="10.0.0.7") for n in range(3)]
    records.append(register(None, Registration(ClientId("elsewhere")), now=1.0, source="10.0.0.8"))
    assert over_source_cap(records, ClientId("c1"), "10.0.0.7", cap=3) is None
    assert over_source_cap(records, ClientId("c9"), "10.0.0.8", cap=3) is None
    problem = over_source_cap(records, ClientId("c9"), "10.0.0.7", cap=3)
    assert problem is not None and problem.startswith("10.0.0.7 already registered 3 client ids")


def test_a_registration_keeps_the_source_unless_told_a_new_one() -> None:
    record = register(None, Registration(ClientId("c1")), now=1.0, source="10.0.0.7")
    assert register(record, Registration(ClientId("c1")), now=2.0).source == "10.0.0.7"
    assert register(record, Registration(ClientId("c1")), now=2.0, source="10.0.0.9").source == "10.0.0.9"
