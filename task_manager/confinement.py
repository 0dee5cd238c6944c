"""What an executor is given, decided by the daemon from this host's config and the task's facts.

Pure builders, no system calls: the child applies what they build
(:mod:`task_manager.worker.confinement`).  Why the daemon decides: it knows the
config (dataset roots, the TLS key, the workspace of other jobs) that the job's
code must never see, while the child only learns what it is given.

* :func:`executor_environment`: the executor's environment is an allowlist of the
  daemon's (``PATH``, locale, ``PYTHON*``, thread counts, the ``NSFL_*`` the child
  reads); anything else the daemon was started with (cloud credentials, tokens)
  stays in the daemon.  ``HOME`` and ``TMPDIR`` are set by the child to its task
  folder.
"""

from __future__ import annotations

from collections.abc import Mapping

# Exact names kept from the daemon's environment.
ALLOWED_VARIABLES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "VIRTUAL_ENV",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CUDA_VISIBLE_DEVICES",
        "KERAS_BACKEND",
        "TF_CPP_MIN_LOG_LEVEL",
        "NSFL_LOG_LEVEL",
        "NSFL_LOG_JSON",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    }
)
# Prefixes kept: the locale, the interpreter's own switches and what the executor reads.
ALLOWED_PREFIXES = ("LC_", "PYTHON", "NSFL_EXECUTOR_", "NSFL_NICE_")


def allowed(name: str) -> bool:
    return name in ALLOWED_VARIABLES or name.startswith(ALLOWED_PREFIXES)


def executor_environment(inherited: Mapping[str, str], given: Mapping[str, str]) -> dict[str, str]:
    """The environment of a warm worker or cold executor: the allowed part of ``inherited`` (the
    daemon's), then everything ``given`` (what the task manager sets for its executors)."""
    return {**{k: v for k, v in inherited.items() if allowed(k)}, **given}
