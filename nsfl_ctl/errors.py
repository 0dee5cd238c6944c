"""The CLI boundary of the error tree: every user error leaves as one ``Error: ...`` line.

DESIGN and the house style ask for one translator per boundary.  Here it is
:class:`TranslatingGroup`, the class of the top-level ``nsfl-ctl`` group:
an :class:`~libs.errors.NsflError` raised anywhere below (a bad config key,
an API error rebuilt from its JSON body, an unreachable API) becomes one
``Error: <message>`` line on stderr, and the command exits with the
catalogue's CLI exit code (click's own usage errors look the same, with
exit code 2).  The message is flattened to one line because scripts and
people read the first line; multi-line detail (log tails) is printed by the
command before it raises.

File-system errors on the user's own paths (a config file that cannot be
written, a download target in a read-only directory) are user errors too:
they become exit code 1 with the OS's words.  Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click

from libs.errors import CATALOGUE, NsflError, TaskFailed

GENERIC_EXIT_CODE = CATALOGUE["Internal"].exit_code
INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a command ended by SIGINT


class CliError(Exception):
    """A user error that is not in the catalogue (an interrupted demo), with its own exit code."""

    def __init__(self, message: str, exit_code: int = GENERIC_EXIT_CODE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class JobDidNotFinish(TaskFailed):
    """A watched or demo job ended FAILED or STOPPED: the command fails with the job's reason."""


def one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip()) or "unknown error"


def fail(ctx: click.Context, message: str, exit_code: int) -> NoReturn:
    """Print ``Error: <message>`` on stderr and end the command with ``exit_code``."""
    click.echo(f"Error: {one_line(message)}", err=True)
    ctx.exit(exit_code)


class TranslatingGroup(click.Group):
    """A click group that turns nsfl, CLI and file-system errors into one ``Error:`` line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NsflError as error:
            fail(ctx, error.message, error.entry.exit_code)
        except CliError as error:
            fail(ctx, error.message, error.exit_code)
        except OSError as error:
            where = f": {error.filename}" if error.filename else ""
            fail(ctx, f"{error.strerror or error}{where}", GENERIC_EXIT_CODE)
