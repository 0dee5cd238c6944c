"""``python -m coordinator --job job.yaml --workdir DIR ...``: run one job's coordinator.

Every flag has an ``NSFL_COORDINATOR_*`` variable (``--tls-cert`` is
``NSFL_COORDINATOR_TLS_CERT``); the job scheduler passes the certificate it
signed for the job that way, so it stays out of process listings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from coordinator.app import run
from coordinator.settings import CoordinatorSettings
from libs.errors import NsflError
from libs.settings import load_settings
from libs.structured_logging import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator", description=__doc__)
    parser.add_argument("--config", type=Path, help="settings file (YAML or JSON)")
    for name in ("job", "workdir", "selector", "listen", "advertise-host", "document-store", "object-store",
                 "scheduler", "token", "log-level", "extenders-root",
                 "tls-ca", "tls-cert", "tls-key", "tls-crl", "trust-domain"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--log-json", action="store_true", default=None)
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="plaintext gRPC on loopback, for tests only")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    try:
        settings = load_settings(CoordinatorSettings, prefix="NSFL_COORDINATOR_", file=args.config,
                                 overrides=overrides)
        configure_logging(settings.log_level, json_output=settings.log_json, component="coordinator")
        return asyncio.run(run(settings))
    except NsflError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
