"""Settings of the task executor, from ``NSFL_EXECUTOR_*`` environment variables.

An executor is started per task by a task manager, so its settings come from
the environment the task manager passes down rather than from a file.  The
defaults fit a pilot; an operator raises ``max_model_bytes`` for very large
models.

The wire fields (:class:`~libs.wire.WireSettings`: ``NSFL_EXECUTOR_TLS_CA``,
``_TLS_CERT``, ``_TLS_KEY``, ``_TLS_CRL``, ``_TRUST_DOMAIN``, ``_INSECURE``)
are the task manager's own, passed down by it
(``task_manager.app.executor_wire_environment``): an executor presents its
client's certificate to the coordinator and accepts only the offered job's
coordinator at the other end (:mod:`task_executor.channels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.errors import InvalidSetting
from libs.rpc import MAX_CHUNK
from libs.settings import load_settings
from libs.wire import WireSettings

ENV_PREFIX = "NSFL_EXECUTOR_"


@dataclass(frozen=True)
class ExecutorSettings(WireSettings):
    # The download buffer is allocated up front from the size the coordinator
    # announces, so the bound must hold before a byte arrives.
    max_model_bytes: int = 8 * 1024**3
    chunk_bytes: int = 2 * 1024 * 1024
    # Used for a call when task.json gives no deadline_unix.
    rpc_timeout_seconds: float = 600.0

    def validate(self) -> None:
        if self.max_model_bytes < 1:
            raise InvalidSetting("max_model_bytes must be positive")
        if not 0 < self.chunk_bytes <= MAX_CHUNK:
            raise InvalidSetting(f"chunk_bytes must be between 1 and {MAX_CHUNK}")
        if self.rpc_timeout_seconds <= 0:
            raise InvalidSetting("rpc_timeout_seconds must be positive")
        self.validate_wire()


def load(env: Mapping[str, str] | None = None) -> ExecutorSettings:
    """From ``NSFL_EXECUTOR_*`` variables (``env``, else the process's environment)."""
    return load_settings(ExecutorSettings, prefix=ENV_PREFIX, env=env)
