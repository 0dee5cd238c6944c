"""Entry point of the ``nsfl-ctl`` command-line tool: the top-level group and its commands.

The command tree reads like ``kubectl``: a verb, then a resource::

    nsfl-ctl config set|get|path
    nsfl-ctl health
    nsfl-ctl create job -f job.yaml | create model NAME --runtime R [-f FILE]
    nsfl-ctl get jobs | job NAME [-w] | metrics JOB | models | model NAME | clients | namespaces
    nsfl-ctl start job NAME [--from-scratch] | stop job NAME
    nsfl-ctl delete job NAME | delete model NAME [--version V]
    nsfl-ctl logs job NAME [--tail N]
    nsfl-ctl upload model NAME -f FILE | download model NAME [--version V] [-f FILE]
    nsfl-ctl standalone up|down|status
    nsfl-ctl client up --config client.yaml
    nsfl-ctl demo
    nsfl-ctl pki init|issue|rotate|show --dir DIR | enroll --api URL --token T --out DIR
    nsfl-ctl pki enrollment-token --client ID | revoke (--dir DIR --cert F | --client ID)

The group's class (:class:`~nsfl_ctl.errors.TranslatingGroup`) is the CLI's
one error boundary: user errors print one ``Error: ...`` line and exit with
the catalogue's code, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from nsfl_ctl import config as cli_config
from nsfl_ctl.commands.client import client_group
from nsfl_ctl.commands.common import Session
from nsfl_ctl.commands.config import config_group
from nsfl_ctl.commands.create import create_group
from nsfl_ctl.commands.demo import demo
from nsfl_ctl.commands.get import get_group
from nsfl_ctl.commands.health import health
from nsfl_ctl.commands.jobs import delete_group, logs_group, start_group, stop_group
from nsfl_ctl.commands.model_files import download_group, upload_group
from nsfl_ctl.commands.pki import pki_group
from nsfl_ctl.commands.standalone import standalone_group
from nsfl_ctl.errors import TranslatingGroup


@click.group(cls=TranslatingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nsfl")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar=cli_config.CONFIG_VARIABLE, default=None,
              help="The CLI config file (default: $XDG_CONFIG_HOME/nsfl/config.yaml).")  # fmt: skip
@click.option(
    "--api",
    default=None,
    metavar="URL",
    help="The API's base URL for this call (overrides config and $NSFL_API).",
)
@click.option("--request-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              metavar="SECONDS", help="How long one API call may take.")  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, api: str | None, request_timeout: float) -> None:
    """nsfl-ctl: drive nsfl federated jobs, models, clients and the standalone control plane."""
    ctx.obj = Session(config_path or cli_config.default_path(), api, request_timeout)


for command in (
    config_group, health, create_group, get_group, start_group, stop_group, delete_group, logs_group,
    upload_group, download_group, standalone_group, client_group, demo, pki_group,
):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    cli()
