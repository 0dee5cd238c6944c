"""``nsfl-ctl health``: is the API up (``/healthz``) and able to work (``/readyz``)?

Both endpoints need no token, so this is the first thing to run when
something is wrong: it tells an unreachable API (exit 6 with the hint to
start the control plane) from one whose store or scheduler is down (exit 6,
naming the failed check) from a healthy one (exit 0).
"""

from __future__ import annotations

from typing import Any, TypedDict

import click

from libs.errors import NsflError
from nsfl_ctl.commands.common import Session, pass_session
from nsfl_ctl.output import emit, output_option, print_fields


class HealthReport(TypedDict, total=False):
    """What ``health`` prints: the API's liveness and readiness, with each readiness check."""

    api: str
    alive: Any  # as /healthz says it ("ok")
    ready: Any  # as /readyz says it ("ready"), or "not ready"
    checks: dict[str, str]  # check name -> its state, as /readyz gives it
    reason: str


@click.command("health")
@output_option
@pass_session
def health(session: Session, output: str) -> None:
    """Check that the API is alive and ready (its store and scheduler answer)."""
    client = session.client()
    alive = client.get("/healthz")
    report: HealthReport = {"api": client.base_url, "alive": alive.get("status", "ok")}
    problem: NsflError | None = None
    try:
        ready = client.get("/readyz")
        report["ready"], report["checks"] = ready.get("status", "ready"), ready.get("checks", {})
    except NsflError as error:
        problem = error
        report["ready"], report["checks"] = "not ready", error.details.get("checks", {})
        report["reason"] = error.message
    if output == "table":
        rows = [("API", report["api"]), ("alive", report["alive"]), ("ready", report["ready"])]
        rows += [(f"  {name}", value) for name, value in report["checks"].items()]
        print_fields(rows)
    else:
        emit(report, output)
    if problem is not None:
        raise problem
