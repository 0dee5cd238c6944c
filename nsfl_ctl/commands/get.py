"""``nsfl-ctl get jobs|job|metrics|models|model|clients|namespaces``.

Tables by default (the columns are in ``nsfl_ctl.views``); ``-o json`` or
``-o yaml`` prints the API's documents unchanged.  Listings follow
``nextPageToken`` until the end (or ``--limit``), so a script never misses a
page.  ``get job NAME -w`` shows a live progress bar until the job ends and
exits non-zero unless it FINISHED (see ``nsfl_ctl.watch``).
"""

from __future__ import annotations

import click

from nsfl_ctl.commands.common import (
    Session,
    all_pages,
    job_path,
    jobs_path,
    model_path,
    models_path,
    namespace_option,
    pass_session,
    watch_options,
    watch_until_done,
)
from nsfl_ctl.output import Column, emit, output_option, print_fields
from nsfl_ctl.views import (
    JOB_COLUMNS,
    MODEL_COLUMNS,
    ROUND_COLUMNS,
    VERSION_COLUMNS,
    client_columns,
    job_fields,
)

STATES = ("QUEUED", "PENDING", "STARTING", "RUNNING", "STOPPING", "FINISHED", "FAILED", "STOPPED", "DELETING")


@click.group("get")
def get_group() -> None:
    """Show jobs, metrics, models, clients or namespaces."""


def _limit_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most this many.")(
        function
    )


@get_group.command("jobs")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES, case_sensitive=False),
              help="Only jobs in this state (repeatable).")  # fmt: skip
@_limit_option
@namespace_option
@output_option
@pass_session
def get_jobs(
    session: Session, states: tuple[str, ...], limit: int | None, namespace: str | None, output: str
) -> None:
    """List the jobs of a namespace."""
    query = {"state": ",".join(s.upper() for s in states) or None}
    jobs = all_pages(session.client(), jobs_path(session.namespace(namespace)), "jobs", query, limit)
    emit({"jobs": jobs}, output, rows=jobs, columns=JOB_COLUMNS)


@get_group.command("job")
@click.argument("name")
@click.option("-w", "--watch", is_flag=True, help="Show a live progress bar until the job ends.")
@watch_options
@namespace_option
@output_option
@pass_session
def get_job(
    session: Session, name: str, watch: bool, interval: float, timeout: float | None, namespace: str | None,
    output: str,
) -> None:  # fmt: skip
    """Show one job; with -w, watch it until it ends (exit 0 only if it FINISHED)."""
    where = session.namespace(namespace)
    if watch:
        watch_until_done(session, where, name, interval=interval, timeout=timeout, output=output)
        return
    job = session.client().get(job_path(where, name))
    if output == "table":
        print_fields(job_fields(job))
    else:
        emit(job, output)


@get_group.command("metrics")
@click.argument("job")
@namespace_option
@output_option
@pass_session
def get_metrics(session: Session, job: str, namespace: str | None, output: str) -> None:
    """Per-round metrics of JOB: participants, training loss, evaluation accuracy and loss."""
    reply = session.client().get(job_path(session.namespace(namespace), job) + "/metrics")
    emit(reply, output, rows=reply.get("rounds") or [], columns=ROUND_COLUMNS)


@get_group.command("models")
@_limit_option
@namespace_option
@output_option
@pass_session
def get_models(session: Session, limit: int | None, namespace: str | None, output: str) -> None:
    """List the registry's models."""
    models = all_pages(session.client(), models_path(session.namespace(namespace)), "models", {}, limit)
    emit({"models": models}, output, rows=models, columns=MODEL_COLUMNS)


@get_group.command("model")
@click.argument("name")
@namespace_option
@output_option
@pass_session
def get_model(session: Session, name: str, namespace: str | None, output: str) -> None:
    """Show one model and its versions."""
    model = session.client().get(model_path(session.namespace(namespace), name))
    if output != "table":
        emit(model, output)
        return
    print_fields([("Name", f"{model.get('namespace')}/{model.get('name')}"), ("Runtime", model.get("runtime")),
                  ("Latest", model.get("latest")), ("Description", model.get("description"))])  # fmt: skip
    click.echo()
    emit(model, output, rows=model.get("versions") or [], columns=VERSION_COLUMNS)


@get_group.command("clients")
@click.option("--alive", is_flag=True, help="Only clients whose heartbeats arrive.")
@output_option
@pass_session
def get_clients(session: Session, alive: bool, output: str) -> None:
    """List the registered clients (task managers), their liveness, source and expiry."""
    reply = session.client().get("/api/v1/clients", {"includeLost": False} if alive else None)
    rows = reply.get("clients") or []
    emit(reply, output, rows=rows, columns=client_columns(rows))


@get_group.command("namespaces")
@output_option
@pass_session
def get_namespaces(session: Session, output: str) -> None:
    """List the namespaces this token may use."""
    reply = session.client().get("/api/v1/namespaces")
    rows = [{"name": n} for n in reply.get("namespaces") or []]
    emit(reply, output, rows=rows, columns=(Column("NAMESPACE", lambda r: r["name"]),))
