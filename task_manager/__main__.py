"""``python -m task_manager --config client.yaml [--log-json]``: the daemon on a data owner's host.

A bad config prints one ``Error: ...`` line and exits with the catalogue's
exit code (2 for settings), never a traceback; so does a workspace held by
another task manager (4) (:func:`libs.service.run_main`).  SIGTERM
(systemd's stop) and SIGINT stop it gracefully: running executors are
killed and reported, workers stopped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from libs.service import run_main, service_arguments
from task_manager.app import serve
from task_manager.settings import load


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = service_arguments(
        "python -m task_manager",
        "nsfl task manager: registers this host with the selector and runs its tasks",
        variables="NSFL_TM_*",
        config_required=True,
        listen=False,
        port_file=False,
    )
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(
        lambda: load(args.config, overrides={"log_json": True} if args.log_json else None),
        serve,
        component="task_manager",
        name="task manager",
    )


if __name__ == "__main__":
    sys.exit(main())
