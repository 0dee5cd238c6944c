"""``python -m job_scheduler [--config FILE] [--listen HOST:PORT] [--port-file PATH]``.

``--port-file`` receives the bound port once the server is serving, so a
launcher (the standalone control plane, a test) can start the scheduler on
port 0 and learn where it listens.  A bad setting prints ``Error: ...`` and
exits with the catalogue's exit code, never a traceback
(:func:`libs.service.run_main`).  SIGTERM or SIGINT stops the scheduler
gracefully; its coordinators keep running and the next scheduler on the
same state adopts them.
"""

from __future__ import annotations

import argparse
import sys

from job_scheduler.app import serve
from job_scheduler.settings import load
from libs.service import run_main, service_arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = service_arguments(
        "python -m job_scheduler",
        "nsfl job scheduler: job state, admission, coordinators",
        variables="NSFL_SCHEDULER_*",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(
        lambda: load(args.config, overrides={"listen": args.listen} if args.listen else None),
        lambda settings: serve(settings, port_file=args.port_file),
        component="job_scheduler",
        name="job scheduler",
    )


if __name__ == "__main__":
    sys.exit(main())
