"""``python -m api_server [--config FILE] [--listen HOST:PORT] [--port-file PATH]``.

``--port-file`` receives the bound port once the server is serving (else
the setting ``port_file`` does), so a launcher (the standalone control
plane, a test) can start it on port 0 and learn where it listens without
racing for a free port.  A bad setting or token file (read first thing, by
:func:`~api_server.app.make_app`) prints ``Error: ...`` and exits with the
catalogue's exit code, never a traceback (:func:`libs.service.serve_main`).
"""

from __future__ import annotations

import sys

from api_server.app import serve
from api_server.settings import load
from libs.service import serve_main


def main(argv: list[str] | None = None) -> int:
    return serve_main(
        argv, prog="python -m api_server", variables="NSFL_API_*", description="nsfl REST API server",
        component="api_server", name="API server", load=load, serve=serve,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
