"""``get job NAME -w``: a live progress bar until the job ends.

The job is polled (every 0.5 s by default) rather than streamed: the REST
API has no watch endpoint, a poll costs one indexed read of the store, and
polling survives an API restart in the middle of a long job.  Once the job
has been seen, a poll that fails because the API is briefly unreachable
(``Unavailable``, ``DeadlineExceeded``) is retried until the deadline; a
failure of the first poll, or any other error (the job was deleted:
``NotFound``), ends the watch with that error.

The bar shows round k of n (the bar's fill), the last evaluation's accuracy
and loss, and the state.  It ends when the job reaches FINISHED, FAILED or
STOPPED, or at ``timeout`` seconds with ``DeadlineExceeded``.  Time and
sleeping are passed in so tests run without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from libs.errors import DeadlineExceeded, NsflError
from nsfl_ctl.views import TERMINAL_STATES, last_metric, mapping, status_of

DEFAULT_INTERVAL = 0.5
_TRANSIENT = frozenset({"Unavailable", "DeadlineExceeded"})


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        TextColumn("round {task.fields[round]}"),
        TextColumn("accuracy {task.fields[accuracy]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class BarFields(TypedDict):
    """What the progress bar shows of a job (``rich`` task fields)."""

    completed: int
    total: int | None
    round: str
    accuracy: str
    loss: str
    state: str


def bar_fields(job: Mapping[str, Any]) -> BarFields:
    """What the bar shows of ``job``: completed/total rounds and the text fields."""
    status = status_of(job)
    total = status.get("rounds") or mapping(job.get("spec")).get("rounds") or None
    done = status.get("round") or 0
    accuracy, loss = last_metric(job, "accuracy"), last_metric(job, "loss")
    return {
        "completed": done,
        "total": total,
        "round": f"{done}/{total if total else '?'}",
        "accuracy": f"{accuracy:.4f}" if isinstance(accuracy, (int, float)) else "-",
        "loss": f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
        "state": job.get("state", "?"),
    }


def watch_job(
    fetch: Callable[[], Mapping[str, Any]],
    *,
    label: str,
    console: Console,
    interval: float = DEFAULT_INTERVAL,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Mapping[str, Any]:
    """Poll ``fetch`` until the job it returns is in a terminal state; that last document."""
    deadline = None if timeout is None else clock() + timeout
    with progress_bar(console) as progress:
        task: TaskID | None = None
        job: Mapping[str, Any] = {}
        while True:
            try:
                job = fetch()
            except NsflError as error:
                if not job or error.code not in _TRANSIENT:
                    raise
            else:
                fields = bar_fields(job)
                if task is None:
                    task = progress.add_task(label, **fields)
                else:
                    progress.update(task, **fields)
                if job.get("state") in TERMINAL_STATES:
                    progress.refresh()
                    return job
            if deadline is not None and clock() >= deadline:
                state = job.get("state", "unknown")
                raise DeadlineExceeded(f"gave up watching {label} after {timeout:g}s; it is still {state}")
            sleep(interval)
