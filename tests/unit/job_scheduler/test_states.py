"""The job state machine: every (state, event) pair, idempotence, and random walks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job_scheduler.states import (
    ALLOWED,
    NO_OPS,
    JobEvent,
    JobState,
    Transition,
    allowed_operations,
    is_active,
    is_terminal,
    next_state,
)
from libs.errors import InvalidState

# Short names keep the table below one readable row per event.
Q, PE, SG, R, SP = JobState.QUEUED, JobState.PENDING, JobState.STARTING, JobState.RUNNING, JobState.STOPPING
FI, FA, SD, DE = JobState.FINISHED, JobState.FAILED, JobState.STOPPED, JobState.DELETING
NOOP, ERR = "no-op", "error"

# Written out by hand from DESIGN §4 and the module's documented decisions, independently of ALLOWED.
EXPECTED: dict[JobEvent, dict[JobState, JobState | str]] = {
    JobEvent.ADMIT: {Q: SG, PE: NOOP, SG: NOOP, R: ERR, SP: ERR, FI: ERR, FA: ERR, SD: ERR, DE: ERR},
    JobEvent.CLIENTS_READY: {Q: ERR, PE: SG, SG: NOOP, R: ERR, SP: ERR, FI: ERR, FA: ERR, SD: ERR, DE: ERR},
    JobEvent.PENDING_TIMEOUT: {Q: ERR, PE: FA, SG: ERR, R: ERR, SP: ERR, FI: ERR, FA: NOOP, SD: ERR, DE: ERR},
    JobEvent.LAUNCHED: {Q: ERR, PE: ERR, SG: R, R: NOOP, SP: SP, FI: ERR, FA: ERR, SD: ERR, DE: ERR},
    JobEvent.ROUND_DONE: {Q: ERR, PE: ERR, SG: R, R: R, SP: SP, FI: ERR, FA: ERR, SD: ERR, DE: ERR},
    JobEvent.FINISH: {Q: ERR, PE: ERR, SG: ERR, R: FI, SP: FI, FI: NOOP, FA: ERR, SD: ERR, DE: ERR},
    JobEvent.FAIL: {Q: FA, PE: FA, SG: FA, R: FA, SP: SD, FI: ERR, FA: NOOP, SD: NOOP, DE: ERR},
    JobEvent.STOP: {Q: SD, PE: SD, SG: SP, R: SP, SP: NOOP, FI: ERR, FA: ERR, SD: NOOP, DE: ERR},
    JobEvent.STOPPED: {Q: ERR, PE: ERR, SG: ERR, R: ERR, SP: SD, FI: ERR, FA: ERR, SD: NOOP, DE: ERR},
    JobEvent.START: {Q: NOOP, PE: ERR, SG: ERR, R: ERR, SP: ERR, FI: Q, FA: Q, SD: Q, DE: ERR},
    JobEvent.DELETE: {Q: DE, PE: DE, SG: ERR, R: ERR, SP: ERR, FI: DE, FA: DE, SD: DE, DE: NOOP},
    JobEvent.UPDATE: {Q: Q, PE: PE, SG: ERR, R: ERR, SP: ERR, FI: FI, FA: FA, SD: SD, DE: ERR},
    JobEvent.RELAUNCH: {Q: ERR, PE: ERR, SG: SG, R: SG, SP: ERR, FI: ERR, FA: ERR, SD: ERR, DE: ERR},
}
PAIRS = [(state, event) for event in JobEvent for state in JobState]


def test_expected_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(JobEvent)
    assert all(set(row) == set(JobState) for row in EXPECTED.values())


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=[f"{s.value}-{e.value}" for s, e in PAIRS])
def test_every_state_and_event(state: JobState, event: JobEvent) -> None:
    expected = EXPECTED[event][state]
    if expected == ERR:
        with pytest.raises(InvalidState) as caught:
            next_state(state, event, reason="test", now=1.0)
        assert f"job in state {state.value} (allowed in: " in caught.value.message
        assert caught.value.details == {"state": state.value, "event": event.value}
        return
    transition = next_state(state, event, reason="test", now=1.0)
    if expected == NOOP:
        assert transition == Transition(state, event, state, "test", 1.0, changed=False)
    else:
        assert isinstance(expected, JobState)
        assert transition == Transition(state, event, expected, "test", 1.0, changed=True)


def test_admit_without_enough_clients_waits_in_pending() -> None:
    transition = next_state(
        JobState.QUEUED, JobEvent.ADMIT, reason="InsufficientClients 1/3", now=5.0, clients_ready=False
    )
    assert transition.to is JobState.PENDING
    assert transition.reason == "InsufficientClients 1/3" and transition.at == 5.0


def test_clients_ready_flag_only_matters_for_admit() -> None:
    assert (
        next_state(JobState.PENDING, JobEvent.CLIENTS_READY, reason="r", now=0, clients_ready=False).to
        is JobState.STARTING
    )


def test_error_message_lists_where_the_event_is_allowed() -> None:
    with pytest.raises(InvalidState) as caught:
        next_state(JobState.FINISHED, JobEvent.STOP, reason="user", now=0)
    assert (
        caught.value.message
        == "cannot stop job in state FINISHED (allowed in: QUEUED, PENDING, STARTING, RUNNING)"
    )
    assert caught.value.code == "InvalidState"


def test_deleting_a_running_job_asks_to_stop_it_first() -> None:
    with pytest.raises(
        InvalidState,
        match=r"cannot delete job in state RUNNING \(allowed in: QUEUED, PENDING, FINISHED, FAILED, STOPPED\); stop it first",
    ):
        next_state(JobState.RUNNING, JobEvent.DELETE, reason="user", now=0)


def test_a_reason_is_required() -> None:
    with pytest.raises(ValueError, match="reason"):
        next_state(JobState.QUEUED, JobEvent.ADMIT, reason=" ", now=0)
    with pytest.raises(ValueError, match="finite"):
        next_state(JobState.QUEUED, JobEvent.ADMIT, reason="r", now=float("nan"))


def test_no_ops_are_exactly_events_finding_the_job_where_they_lead() -> None:
    """An event is a no-op where it is not in the table but the table leads it there from elsewhere."""
    targets = {event: {ALLOWED[s][event] for s in JobState if event in ALLOWED[s]} for event in JobEvent}
    targets[JobEvent.ADMIT].add(JobState.PENDING)
    derived = {
        state: frozenset(e for e in JobEvent if state in targets[e] and e not in ALLOWED[state])
        for state in JobState
    }
    assert NO_OPS == derived


def test_table_and_no_ops_do_not_overlap() -> None:
    for state in JobState:
        assert not set(ALLOWED[state]) & NO_OPS[state]


@pytest.mark.parametrize(
    ("state", "operations"),
    [
        (JobState.QUEUED, {"stop", "update", "delete"}),
        (JobState.PENDING, {"stop", "update", "delete"}),
        (JobState.STARTING, {"stop"}),
        (JobState.RUNNING, {"stop"}),
        (JobState.STOPPING, set()),
        (JobState.FINISHED, {"start", "update", "delete"}),
        (JobState.FAILED, {"start", "update", "delete"}),
        (JobState.STOPPED, {"start", "update", "delete"}),
        (JobState.DELETING, set()),
    ],
)
def test_allowed_operations_per_state(state: JobState, operations: set[str]) -> None:
    assert allowed_operations(state) == operations


def test_terminal_and_active_states() -> None:
    assert {s for s in JobState if is_terminal(s)} == {JobState.FINISHED, JobState.FAILED, JobState.STOPPED}
    assert {s for s in JobState if is_active(s)} == {
        JobState.PENDING,
        JobState.STARTING,
        JobState.RUNNING,
        JobState.STOPPING,
    }


def test_every_state_is_reachable_from_queued() -> None:
    seen, frontier = {JobState.QUEUED}, [JobState.QUEUED]
    while frontier:
        state = frontier.pop()
        for to in [*ALLOWED[state].values(), JobState.PENDING if state is JobState.QUEUED else state]:
            if to not in seen:
                seen.add(to)
                frontier.append(to)
    assert seen == set(JobState)


def test_states_and_events_serialise_as_their_names() -> None:
    assert JobState("RUNNING") is JobState.RUNNING
    assert f"{JobEvent.ROUND_DONE}" == "ROUND_DONE"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(JobEvent), st.booleans()), max_size=40))
def test_random_event_sequences_stay_in_the_machine(events: list[tuple[JobEvent, bool]]) -> None:
    state, now = JobState.QUEUED, 0.0
    for event, clients_ready in events:
        now += 1.0
        try:
            transition = next_state(
                state, event, reason=f"{event.value} at {now}", now=now, clients_ready=clients_ready
            )
        except InvalidState:
            assert event not in ALLOWED[state] and event not in NO_OPS[state]
            continue
        assert isinstance(transition.to, JobState)
        assert transition.state is state and transition.at == now
        if not transition.changed:
            assert transition.to is state
        if is_terminal(state) and transition.to is not state:
            assert event in (JobEvent.START, JobEvent.DELETE)
        if state is JobState.DELETING:
            assert transition.to is JobState.DELETING
        if transition.to is JobState.DELETING and state is not JobState.DELETING:
            assert not is_active(state) or state is JobState.PENDING
        state = transition.to
