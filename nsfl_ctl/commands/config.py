"""``nsfl-ctl config set|get|path``: the CLI's own settings (see ``nsfl_ctl.config``).

``config get`` shows the values in effect, environment overrides
included, with the token masked unless ``--reveal``: a screen share or a
pasted terminal log must not leak it.  ``config set token -`` reads the
token from stdin so it stays out of shell history and ``ps``.
"""

from __future__ import annotations

import sys

import click

from nsfl_ctl import config as cli_config
from nsfl_ctl.commands.common import Session, pass_session
from nsfl_ctl.output import emit, output_option, print_fields


@click.group("config")
def config_group() -> None:
    """Show or change where the API is, the token and the default namespace."""


@config_group.command("set")
@click.argument("key", type=click.Choice(cli_config.KEYS))
@click.argument("value")
@pass_session
def set_value(session: Session, key: str, value: str) -> None:
    """Set KEY (api, token or namespace) to VALUE; VALUE '-' reads it from stdin."""
    if value == "-":
        value = sys.stdin.readline().strip()
    cli_config.update_file(session.config_path, **{key: value})
    shown = cli_config.masked(value) if key == "token" else value
    click.echo(f"{key} set to {shown} in {session.config_path}")


@config_group.command("get")
@click.argument("key", type=click.Choice(cli_config.KEYS), required=False)
@click.option("--reveal", is_flag=True, help="Show the token in full.")
@output_option
@pass_session
def get_value(session: Session, key: str | None, reveal: bool, output: str) -> None:
    """Show the settings in effect (or only KEY); the token is masked unless --reveal."""
    values = session.config().as_dict()
    if not reveal:
        values["token"] = cli_config.masked(values["token"])
    if key is not None:
        if output == "table":
            click.echo(values[key])
        else:
            emit({key: values[key]}, output)
        return
    if output == "table":
        print_fields([(name, value or "(not set)") for name, value in values.items()])
    else:
        emit(values, output)


@config_group.command("path")
@pass_session
def show_path(session: Session) -> None:
    """Print the config file's path."""
    click.echo(str(session.config_path))
