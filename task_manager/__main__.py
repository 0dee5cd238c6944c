"""``python -m task_manager --config client.yaml [--log-json]``: the daemon on a data owner's host.

A bad config prints one ``Error: ...`` line and exits with the catalogue's
exit code (2 for settings), never a traceback; so does a workspace held by
another task manager (4).  SIGTERM (systemd's stop) and SIGINT stop it
gracefully: running executors are killed and reported, workers stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from libs.errors import NsflError
from libs.structured_logging import configure_logging, log_context
from task_manager.app import serve
from task_manager.settings import TaskManagerSettings, load

log = logging.getLogger("task_manager")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m task_manager",
        description="nsfl task manager: registers this host with the selector and runs its tasks",
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="YAML or JSON file (NSFL_TM_* variables win)"
    )
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return parser.parse_args(argv)


async def run(settings: TaskManagerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        with log_context(client=settings.client_id):
            await serve(settings, stop=stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load(args.config, overrides={"log_json": True} if args.log_json else None)
    except NsflError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.entry.exit_code
    configure_logging(settings.log_level, json_output=settings.log_json, component="task_manager")
    try:
        asyncio.run(run(settings))
    except NsflError as exc:
        log.error("task manager stopped: %s", exc.message)
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.entry.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
