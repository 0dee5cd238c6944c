"""``python -m coordinator --job job.yaml --workdir DIR ...``: run one job's coordinator.

Every flag has an ``NSFL_COORDINATOR_*`` variable (``--tls-cert`` is
``NSFL_COORDINATOR_TLS_CERT``); the job scheduler passes the certificate it
signed for the job that way, so it stays out of process listings.  The exit
code is the job's state (0 finished, 1 failed, 3 stopped); an error before
or outside the job prints ``Error: ...`` and exits 2 (:func:`libs.service.run_main`).
"""

from __future__ import annotations

import sys

from coordinator.app import run
from coordinator.settings import CoordinatorSettings
from libs.service import run_main, service_arguments
from libs.settings import load_settings

FLAGS = (
    "job", "workdir", "selector", "advertise-host", "document-store", "object-store", "scheduler", "token",
    "log-level", "extenders-root", "tls-ca", "tls-cert", "tls-key", "tls-crl", "trust-domain",
)  # fmt: skip
ERROR_EXIT_CODE = 2  # whatever the error: 1 and 3 mean the job failed or was stopped


def main(argv: list[str] | None = None) -> int:
    parser = service_arguments(
        "python -m coordinator",
        "nsfl coordinator: runs one job",
        variables="NSFL_COORDINATOR_*",
        port_file=False,
    )
    for name in FLAGS:
        parser.add_argument(f"--{name}")
    parser.add_argument("--log-json", action="store_true", default=None)
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="plaintext gRPC on loopback, for tests only")  # fmt: skip
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    return run_main(
        lambda: load_settings(
            CoordinatorSettings, prefix="NSFL_COORDINATOR_", file=args.config, overrides=overrides
        ),
        run,
        component="coordinator",
        name="coordinator",
        error_exit_code=ERROR_EXIT_CODE,
        interrupted_exit_code=None,
    )


if __name__ == "__main__":
    sys.exit(main())
