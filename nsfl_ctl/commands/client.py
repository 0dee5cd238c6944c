"""``nsfl-ctl client up --config client.yaml``: a task manager in the foreground.

The same daemon as ``python -m task_manager``, run in this process through
``task_manager.app.serve``, for a data owner trying nsfl before installing
the systemd unit.  Ctrl-C or SIGTERM sets the stop event, and ``serve``
shuts down in its documented order (stream, executors, workers, workspace
lock), so nothing is left running.  A bad config is one ``Error:`` line
with the catalogue's exit code, like every other command.  The config's
``tls_*`` keys are the host's certificate (``nsfl-ctl pki enroll`` writes
them); without them the task manager refuses to start, saying how to fix it.

The task manager is imported when the command runs, not when the CLI
starts: it pulls in gRPC and the executors, which the other commands never
need.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click


@click.group("client")
def client_group() -> None:
    """Run a task manager (the daemon on a data owner's host)."""


@client_group.command("up")
@click.option("--config", "config_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The task manager's YAML config (see examples/pytorch_digits/client.yaml).")  # fmt: skip
@click.option("--log-json", is_flag=True, help="One JSON object per log line.")
def up(config_file: Path, log_json: bool) -> None:
    """Run a task manager in the foreground until Ctrl-C."""
    from libs.structured_logging import configure_logging
    from task_manager.settings import load

    settings = load(config_file, overrides={"log_json": True} if log_json else None)
    configure_logging(settings.log_level, json_output=settings.log_json, component="task_manager")
    tls = settings.tls
    wire = f"mutual TLS as {tls.identity().uri}" if tls is not None else "PLAINTEXT (insecure: true)"
    click.echo(f"task manager {settings.client_id} connecting to {settings.selector_address} with {wire} "
               "(Ctrl-C stops it)", err=True)  # fmt: skip

    from task_manager.app import serve

    asyncio.run(serve(settings))  # until SIGINT or SIGTERM
    click.echo(f"task manager {settings.client_id} stopped", err=True)
