"""``nsfl-ctl standalone up|down|status``: the control plane on this machine (see ``nsfl_ctl.standalone``).

The state directory defaults to ``$XDG_STATE_HOME/nsfl/standalone`` (else
``~/.local/state/nsfl/standalone``) and can be set with ``--state-dir`` or
``$NSFL_CTL_STATE_DIR``.  ``up`` writes the API URL and the generated admin
token into the CLI config, so ``nsfl-ctl get jobs`` works right after it.
The plane always runs with mutual TLS from its own CA in ``<state>/pki``;
there is deliberately no option to turn it off.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from nsfl_ctl import config as cli_config
from nsfl_ctl import control_plane_plan as plan
from nsfl_ctl import standalone
from nsfl_ctl.commands.common import Session, pass_session
from nsfl_ctl.output import Column, emit, output_option, print_table

STATE_DIR_VARIABLE = "NSFL_CTL_STATE_DIR"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base) / "nsfl" / "standalone"


def _state_dir_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar=STATE_DIR_VARIABLE,
        default=None, help="Where the store, objects, logs and pids live (default: $XDG_STATE_HOME/nsfl/standalone).",
    )(function)  # fmt: skip


@click.group("standalone")
def standalone_group() -> None:
    """Run the control plane on this machine: SQLite and local files, no Kubernetes."""


@standalone_group.command("up")
@_state_dir_option
@click.option("--port", type=click.IntRange(0, 65535), default=plan.DEFAULT_API_PORT, show_default=True,
              help="The API's port on 127.0.0.1 (0: any free port).")  # fmt: skip
@click.option("--selector-port", type=click.IntRange(0, 65535), default=plan.DEFAULT_SELECTOR_PORT,
              show_default=True, help="The client selector's port, which task managers dial (0: any).")  # fmt: skip
@click.option("--scheduler-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="The job scheduler's port (0: any; only the API and coordinators dial it).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=standalone.DEFAULT_START_TIMEOUT, show_default=True,
              help="Seconds to wait for every component to be ready.")  # fmt: skip
@click.option("--write-config/--no-write-config", default=True, show_default=True,
              help="Store the API URL and admin token in the CLI config.")  # fmt: skip
@pass_session
def up(
    session: Session, state_dir: Path | None, port: int, selector_port: int, scheduler_port: int, timeout: float,
    write_config: bool,
) -> None:  # fmt: skip
    """Start the selector, the scheduler and the API server in the background."""
    directory = state_dir or default_state_dir()
    plane = standalone.up(
        directory, ports=plan.Ports(api=port, selector=selector_port, scheduler=scheduler_port),
        timeout=timeout, report=lambda line: click.echo(line, err=True),
    )  # fmt: skip
    if write_config:
        cli_config.update_file(session.config_path, api=plane.api_url, token=plane.token)
    verb = "already runs" if plane.already_running else "is up"
    click.echo(f"the standalone control plane {verb} in {plane.state_dir}")
    click.echo(f"  API       {plane.api_url}")
    click.echo(
        f"  selector  {plane.selector_address}   (task managers: selector_address: {plane.selector_address})"
    )
    click.echo(f"  mutual TLS on every gRPC link; the CA is {plane.pki_dir / 'ca.pem'}")
    click.echo(
        "  a client's certificate: nsfl-ctl pki enrollment-token --client ID, then on its host "
        f"nsfl-ctl pki enroll --api {plane.api_url} --token T --out DIR"
    )
    if write_config:
        click.echo(f"  the API URL and admin token are in {session.config_path}")
    else:
        click.echo(f"  the admin token is in {plane.state_dir / plan.TOKEN_FILE}")


@standalone_group.command("down")
@_state_dir_option
@click.option("--grace", type=click.FloatRange(min=0), default=standalone.DEFAULT_STOP_GRACE, show_default=True,
              help="Seconds each process gets to exit after SIGTERM before SIGKILL.")  # fmt: skip
def down(state_dir: Path | None, grace: float) -> None:
    """Stop the control plane and every coordinator it left running."""
    directory = state_dir or default_state_dir()
    results = standalone.down(directory, grace=grace)
    if not results:
        click.echo(f"nothing of {directory} was running")
        return
    print_table(results, (Column("COMPONENT", lambda r: r["component"]), Column("PID", lambda r: r["pid"]),
                          Column("RESULT", lambda r: r["result"])))  # fmt: skip


@standalone_group.command("status")
@_state_dir_option
@output_option
def status(state_dir: Path | None, output: str) -> None:
    """Show whether each component (and coordinator) is alive; exit 6 if one is not."""
    directory = state_dir or default_state_dir()
    rows = standalone.status(directory)
    columns = (
        Column("COMPONENT", lambda r: r["component"]), Column("STATE", lambda r: r["state"]),
        Column("PID", lambda r: r["pid"]), Column("ADDRESS", lambda r: r["address"]), Column("LOG", lambda r: r["log"]),
    )  # fmt: skip
    emit({"stateDir": str(directory), "components": rows}, output, rows=rows, columns=columns)
    dead = [r["component"] for r in rows if r["state"] != "alive"]
    if dead:
        from libs.errors import Unavailable

        raise Unavailable(f"not running: {', '.join(dead)} (restart with nsfl-ctl standalone down, then up)")
