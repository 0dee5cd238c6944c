"""``python -m job_scheduler [--config FILE] [--listen HOST:PORT] [--port-file PATH]``.

``--port-file`` receives the bound port once the server is serving, so a
launcher (the standalone control plane, a test) can start the scheduler on
port 0 and learn where it listens.  A bad setting prints ``Error: ...`` and
exits with the catalogue's exit code, never a traceback
(:func:`libs.service.serve_main`).  SIGTERM or SIGINT stops the scheduler
gracefully; its coordinators keep running and the next scheduler on the
same state adopts them.
"""

from __future__ import annotations

import sys

from job_scheduler.app import serve
from job_scheduler.settings import load
from libs.service import serve_main


def main(argv: list[str] | None = None) -> int:
    return serve_main(
        argv, prog="python -m job_scheduler", variables="NSFL_SCHEDULER_*",
        description="nsfl job scheduler: job state, admission, coordinators",
        component="job_scheduler", name="job scheduler", load=load, serve=serve,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
