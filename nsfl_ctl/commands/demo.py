"""``nsfl-ctl demo``: three local clients train the digits classifier together (see ``nsfl_ctl.demo``).

Exit 0 when the job FINISHED with at least the target accuracy; otherwise
one ``Error:`` line with the reason.  Ctrl-C or SIGTERM stops everything
the demo started before the command exits (130).
"""

from __future__ import annotations

from pathlib import Path

import click

from nsfl_ctl.demo import DemoOptions, run_demo, verdict
from nsfl_ctl.errors import INTERRUPTED_EXIT_CODE, CliError
from nsfl_ctl.output import stdout_console


@click.command("demo")
@click.option("--rounds", type=click.IntRange(1, 100), default=5, show_default=True, help="Federated rounds.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Use this state directory (kept) instead of a temporary one.")  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the temporary state directory (logs, store, workspaces).")
@click.option("--timeout", type=click.FloatRange(min=10), default=170.0, show_default=True,
              help="Give up after this many seconds.")  # fmt: skip
def demo(rounds: int, state_dir: Path | None, keep: bool, timeout: float) -> None:
    """Run a federated job on three local clients and show the result."""
    console = stdout_console()
    options = DemoOptions(rounds=rounds, state_dir=state_dir, keep=keep, timeout=timeout)
    try:
        run = run_demo(options, console)
    except KeyboardInterrupt:
        raise CliError(
            "interrupted; everything the demo started was stopped", INTERRUPTED_EXIT_CODE
        ) from None
    if run.accuracy is not None:
        loss = f", loss {run.loss:.4f}" if run.loss is not None else ""
        console.print(f"final accuracy [bold]{run.accuracy:.4f}[/]{loss}")
    if run.model_path is not None:
        console.print(f"model: {run.model_path}", highlight=False)
    if run.plot_path is not None:
        console.print(f"plot:  {run.plot_path}", highlight=False)
    if not run.temporary:
        console.print(f"state: {run.state_dir} (logs under logs/ and clients/)", highlight=False)
    failure = verdict(run, options)
    if failure is not None:
        raise failure
