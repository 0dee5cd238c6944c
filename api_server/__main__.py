"""``python -m api_server [--config FILE] [--listen HOST:PORT] [--port-file PATH]``.

``--port-file`` receives the bound port once the server is serving, so a
launcher (the standalone control plane, a test) can start it on port 0 and
learn where it listens without racing for a free port.  A bad setting or
token file prints ``Error: ...`` and exits with the catalogue's exit code,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from api_server.app import serve
from api_server.auth import load_token_file
from api_server.settings import load
from libs.errors import NsflError
from libs.structured_logging import configure_logging

log = logging.getLogger("api_server")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m api_server", description="nsfl REST API server")
    parser.add_argument("--config", type=Path, help="YAML or JSON settings file (NSFL_API_* variables win)")
    parser.add_argument("--listen", help="host:port to listen on (port 0: any free port)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen"] = args.listen
    if args.port_file:
        overrides["port_file"] = args.port_file
    try:
        settings = load(args.config, overrides=overrides)
        configure_logging(settings.log_level, json_output=settings.log_json, component="api_server")
        assert settings.token_file is not None
        load_token_file(settings.token_file)  # fail now, with a message, rather than inside the runner
    except NsflError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.entry.exit_code
    try:
        asyncio.run(serve(settings, port_file=settings.port_file))
    except NsflError as exc:
        log.error("API server stopped: %s", exc.message)
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.entry.exit_code
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
