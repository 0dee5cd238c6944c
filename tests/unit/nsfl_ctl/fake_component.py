"""A stand-in for a control-plane component: ``python -m tests.unit.nsfl_ctl.fake_component``.

It takes the real components' command line (``--listen``, ``--port-file``;
the API server's address comes from ``NSFL_API_LISTEN``), serves HTTP on
that address (200 on every GET, so ``/readyz`` is ready), writes the bound
port to the port file, records its ``NSFL_*`` environment next to it for
the test to inspect, and exits cleanly on SIGTERM.  With
``FAKE_COMPONENT_FAIL=<name>`` the component whose port file is named
``<name>.port`` exits with code 2 after printing an error instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from libs.service import write_port_file


class Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ready"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen")
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()
    name = args.port_file.stem
    if os.environ.get("FAKE_COMPONENT_FAIL") == name:
        print(f"Error: setting 'listen' of the fake {name} is broken", file=sys.stderr)
        return 2
    host, _, port = (args.listen or os.environ["NSFL_API_LISTEN"]).rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Ready)
    variables = {k: v for k, v in os.environ.items() if k.startswith("NSFL_")}
    args.port_file.with_suffix(".env.json").write_text(json.dumps(variables))
    write_port_file(args.port_file, server.server_address[1])
    print(f"fake {name} serving on {host}:{server.server_address[1]}", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
