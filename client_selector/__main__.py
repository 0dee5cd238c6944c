"""``python -m client_selector [--config FILE] [--listen HOST:PORT] [--port-file PATH]``.

``--port-file`` receives the bound port once the server is serving, so a
launcher (the standalone control plane, a test) can start the selector on
port 0 and learn where it listens without racing for a free port.  A bad
setting prints ``Error: ...`` and exits with the catalogue's exit code,
never a traceback (:func:`libs.service.serve_main`).
"""

from __future__ import annotations

import sys

from client_selector.app import serve
from client_selector.settings import load
from libs.service import serve_main


def main(argv: list[str] | None = None) -> int:
    return serve_main(
        argv, prog="python -m client_selector", variables="NSFL_SELECTOR_*",
        description="nsfl client selector: client registry, selection, task relay",
        component="client_selector", name="client selector", load=load, serve=serve,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
