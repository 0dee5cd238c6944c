"""``python -m api_server [--config FILE] [--listen HOST:PORT] [--port-file PATH]``.

``--port-file`` receives the bound port once the server is serving, so a
launcher (the standalone control plane, a test) can start it on port 0 and
learn where it listens without racing for a free port.  A bad setting or
token file (read first thing, by :func:`~api_server.app.make_app`) prints
``Error: ...`` and exits with the catalogue's exit code, never a traceback
(:func:`libs.service.run_main`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from api_server.app import serve
from api_server.settings import load
from libs.service import run_main, service_arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = service_arguments("python -m api_server", "nsfl REST API server", variables="NSFL_API_*")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen"] = args.listen
    if args.port_file:
        overrides["port_file"] = args.port_file
    return run_main(
        lambda: load(args.config, overrides=overrides),
        lambda settings: serve(settings, port_file=settings.port_file),
        component="api_server",
        name="API server",
    )


if __name__ == "__main__":
    sys.exit(main())
