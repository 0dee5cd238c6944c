"""``nsfl-ctl create job|model``.

``create job -f job.yaml`` reads the file with the job spec parser of
``libs.jobspec`` and validates it with the same schema and rules as the API
*before* anything is sent: a malformed file or an unknown field fails at
once, naming the file, line or field, with the catalogue's exit code for
``ValidationFailed`` (2), and the API never sees it.  The spec sent is the
one in the file (the server writes in its defaults), with the namespace
filled in.

``create model NAME --runtime R [-f weights.safetensors]`` creates a
registry model and, with ``-f``, uploads the file as its first version.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import click

from libs.errors import ValidationFailed
from libs.jobspec import parse_spec_text, validate_spec
from libs.jobspec.parsing import MAX_TEXT_BYTES
from nsfl_ctl.commands.common import (
    Session,
    jobs_path,
    models_path,
    namespace_option,
    pass_session,
    watch_options,
    watch_until_done,
)
from nsfl_ctl.commands.model_files import upload_version
from nsfl_ctl.output import emit, output_option

RUNTIMES = ("pytorch", "tensorflow")


@click.group("create")
def create_group() -> None:
    """Create a job or a model."""


@create_group.command("job")
@click.option("-f", "--filename", "source", required=True, type=click.File("r", encoding="utf-8"),
              help="The job spec or FederatedJob manifest, YAML or JSON ('-' for stdin).")  # fmt: skip
@namespace_option
@click.option(
    "--dry-run", is_flag=True, help="Validate the spec locally and print it with defaults; send nothing."
)
@click.option("-w", "--watch", is_flag=True, help="Then watch the job until it ends.")
@watch_options
@output_option
@pass_session
def create_job(
    session: Session, source: TextIO, namespace: str | None, dry_run: bool, watch: bool,
    interval: float, timeout: float | None, output: str,
) -> None:  # fmt: skip
    """Submit a federated job from a YAML or JSON file."""
    # Read a little past the parser's limit, so an oversized file is refused without being read whole.
    filename = str(getattr(source, "name", "<stdin>"))
    spec = parse_spec_text(source.read(MAX_TEXT_BYTES + 1), filename=filename)
    target = _namespace_of(session, spec.get("namespace"), namespace)
    spec["namespace"] = target
    try:
        checked = validate_spec(spec)
    except ValidationFailed as error:
        raise ValidationFailed(f"{filename}: {error.message}", details=error.details) from None
    if dry_run:
        emit(checked, output if output != "table" else "yaml")
        return
    job = session.client().post(jobs_path(target), spec)
    if watch:
        click.echo(f"job {target}/{job.get('name', spec.get('name'))} created", err=output != "table")
        watch_until_done(
            session, target, str(spec["name"]), interval=interval, timeout=timeout, output=output
        )
    elif output != "table":
        emit(job, output)
    else:
        click.echo(f"job {target}/{job.get('name', spec.get('name'))} created ({job.get('state', 'QUEUED')})")


def _namespace_of(session: Session, in_spec: object, flag: str | None) -> str:
    if in_spec is not None and not isinstance(in_spec, str):
        raise ValidationFailed("spec.namespace: must be a string")
    if in_spec and flag and in_spec != flag:
        raise ValidationFailed(
            f"spec.namespace: the file says {in_spec!r} but -n says {flag!r}; omit one or make them agree"
        )
    return session.namespace(flag or in_spec or None)


@create_group.command("model")
@click.argument("name")
@click.option(
    "--runtime", type=click.Choice(RUNTIMES), required=True, help="The framework the weights are for."
)
@click.option("--description", default="", help="What the model is.")
@click.option("-f", "--file", "weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A safetensors file to upload as version 1.")  # fmt: skip
@namespace_option
@output_option
@pass_session
def create_model(
    session: Session, name: str, runtime: str, description: str, weights: Path | None, namespace: str | None,
    output: str,
) -> None:  # fmt: skip
    """Create a registry model (and upload its first version with -f)."""
    target = session.namespace(namespace)
    client = session.client()
    model = client.post(models_path(target), {"name": name, "runtime": runtime, "description": description})
    version = upload_version(client, target, name, weights, description) if weights is not None else None
    if output != "table":
        emit({**model, "uploaded": version} if version else model, output)
        return
    click.echo(f"model {target}/{name} created ({runtime})")
    if version:
        click.echo(f"version {version.get('version')} uploaded ({version.get('size')} bytes, "
                   f"sha256 {str(version.get('sha256', ''))[:12]})")  # fmt: skip
