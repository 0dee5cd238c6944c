"""Entry point of the ``nsfl-ctl`` command-line tool (commands arrive with the control-plane issue)."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="nsfl")
def cli() -> None:
    """nsfl-ctl: drive nsfl federated jobs, models, clients and the standalone control plane."""


def main() -> None:
    cli()
