"""``python -m job_scheduler [--config FILE] [--listen HOST:PORT] [--port-file PATH]``.

``--port-file`` receives the bound port once the server is serving, so a
launcher (the standalone control plane, a test) can start the scheduler on
port 0 and learn where it listens.  A bad setting prints ``Error: ...`` and
exits with the catalogue's exit code, never a traceback.  SIGTERM or SIGINT
stops the scheduler gracefully; its coordinators keep running and the next
scheduler on the same state adopts them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from job_scheduler.app import serve
from job_scheduler.settings import load
from libs.errors import NsflError
from libs.structured_logging import configure_logging

log = logging.getLogger("job_scheduler")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m job_scheduler",
        description="nsfl job scheduler: job state, admission, coordinators",
    )
    parser.add_argument(
        "--config", type=Path, help="YAML or JSON settings file (NSFL_SCHEDULER_* variables win)"
    )
    parser.add_argument("--listen", help="host:port to listen on (port 0: any free port)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load(args.config, overrides={"listen": args.listen} if args.listen else None)
    except NsflError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.entry.exit_code
    configure_logging(settings.log_level, json_output=settings.log_json, component="job_scheduler")
    try:
        asyncio.run(serve(settings, port_file=args.port_file))
    except NsflError as exc:
        log.error("job scheduler stopped: %s", exc.message)
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.entry.exit_code
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
