"""``nsfl-ctl start job``, ``stop job``, ``delete job|model`` and ``logs job``.

These forward one call each; whether the job's state allows it is the
scheduler's decision (409 ``InvalidState`` otherwise, exit code 4, with the
scheduler's words).  ``delete`` does not ask for confirmation, like
``kubectl delete``: scripts call it, and a running job must be stopped
first anyway.
"""

from __future__ import annotations

import click

from nsfl_ctl.commands.common import Session, job_path, model_path, namespace_option, pass_session
from nsfl_ctl.output import emit, output_option


def _report(job: dict[str, object], output: str, what: str) -> None:
    if output != "table":
        emit(job, output)
    else:
        click.echo(f"job {job.get('namespace')}/{job.get('name')} {what} ({job.get('state')})")


@click.group("start")
def start_group() -> None:
    """Start a FINISHED, FAILED or STOPPED job again."""


@start_group.command("job")
@click.argument("name")
@click.option("--from-scratch", is_flag=True, help="Start from the initial model, not the last checkpoint.")
@namespace_option
@output_option
@pass_session
def start_job(session: Session, name: str, from_scratch: bool, namespace: str | None, output: str) -> None:
    """Start job NAME again (from its last checkpoint unless --from-scratch)."""
    path = job_path(session.namespace(namespace), name) + ":start"
    _report(session.client().post(path, {"fromScratch": from_scratch}), output, "started")


@click.group("stop")
def stop_group() -> None:
    """Stop a job."""


@stop_group.command("job")
@click.argument("name")
@namespace_option
@output_option
@pass_session
def stop_job(session: Session, name: str, namespace: str | None, output: str) -> None:
    """Stop job NAME (its coordinator checkpoints and exits at a safe point)."""
    _report(session.client().post(job_path(session.namespace(namespace), name) + ":stop"), output, "stopping")


@click.group("delete")
def delete_group() -> None:
    """Delete a job or a model."""


@delete_group.command("job")
@click.argument("name")
@namespace_option
@output_option
@pass_session
def delete_job(session: Session, name: str, namespace: str | None, output: str) -> None:
    """Delete job NAME and its files (stop it first if it runs)."""
    _report(session.client().delete(job_path(session.namespace(namespace), name)), output, "deleted")


@delete_group.command("model")
@click.argument("name")
@click.option("--version", "number", type=click.IntRange(min=1), help="Delete only this version.")
@namespace_option
@pass_session
def delete_model(session: Session, name: str, number: int | None, namespace: str | None) -> None:
    """Delete model NAME with every version (or only --version)."""
    where = session.namespace(namespace)
    path = model_path(where, name) + (f"/versions/{number}" if number is not None else "")
    session.client().delete(path)
    click.echo(f"model {where}/{name}" + (f" version {number}" if number is not None else "") + " deleted")


@click.group("logs")
def logs_group() -> None:
    """Print logs."""


@logs_group.command("job")
@click.argument("name")
@click.option(
    "--tail", type=click.IntRange(min=0), default=0, help="Only the last N lines (0: the server's default)."
)
@namespace_option
@pass_session
def job_logs(session: Session, name: str, tail: int, namespace: str | None) -> None:
    """Print the coordinator log of job NAME."""
    text = session.client().text(
        job_path(session.namespace(namespace), name) + "/logs", {"tail": tail or None}
    )
    click.echo(text, nl=not text.endswith("\n"))
