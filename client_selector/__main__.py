"""``python -m client_selector [--config FILE] [--listen HOST:PORT] [--port-file PATH]``.

``--port-file`` receives the bound port once the server is serving, so a
launcher (the standalone control plane, a test) can start the selector on
port 0 and learn where it listens without racing for a free port.  A bad
setting prints ``Error: ...`` and exits with the catalogue's exit code,
never a traceback (:func:`libs.service.run_main`).
"""

from __future__ import annotations

import argparse
import sys

from client_selector.app import serve
from client_selector.settings import load
from libs.service import run_main, service_arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = service_arguments(
        "python -m client_selector",
        "nsfl client selector: client registry, selection, task relay",
        variables="NSFL_SELECTOR_*",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(
        lambda: load(args.config, overrides={"listen": args.listen} if args.listen else None),
        lambda settings: serve(settings, port_file=args.port_file),
        component="client_selector",
        name="client selector",
    )


if __name__ == "__main__":
    sys.exit(main())
