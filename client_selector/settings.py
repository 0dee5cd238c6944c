"""Settings of the client selector: one frozen dataclass, loaded once at start.

Loaded by :func:`load` from defaults, an optional YAML/JSON file, then
``NSFL_SELECTOR_*`` variables (``NSFL_SELECTOR_HEARTBEAT_TIMEOUT_SECONDS=5``),
strictly: an unknown key is an error, not a silent default.

Why the heartbeat timeout must exceed the interval by a margin: a task manager
that heartbeats every ``interval`` seconds must survive one late or lost beat
(a GC pause, a slow network) without being declared lost, so ``validate``
insists on ``timeout >= 2 × interval``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from libs.errors import InvalidSetting
from libs.settings import load_settings
from libs.wire import WireSettings

PREFIX = "NSFL_SELECTOR_"


DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True)
class SelectorSettings(WireSettings):
    """Everything the selector process needs to know, validated at start."""

    listen: str = "127.0.0.1:50051"
    state_dir: Path = Path("~/.nsfl/state").expanduser()
    # Empty means ``sqlite:///<state_dir>/selector.db`` (the store URL takes the absolute path).
    store_url: str = ""
    heartbeat_interval_seconds: float = 2.0
    heartbeat_timeout_seconds: float = 10.0
    # How long SelectClients reserves a client when the request does not say.
    reservation_seconds: float = 600.0
    # How long OfferTask waits for a task manager's answer when the request does not say.
    offer_answer_timeout_seconds: float = 10.0
    # A client not seen for this long is removed from the registry (and its store) by the sweeper.
    client_retention_seconds: float = DEFAULT_RETENTION_SECONDS
    # Distinct client ids one peer host may have registered; Connect beyond it is refused.
    max_clients_per_source: int = 100
    log_json: bool = False
    log_level: str = "INFO"

    def validate(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise InvalidSetting(
                f"setting 'listen' must be host:port with a port in 0-65535, got {self.listen!r}"
            )
        for name in (
            "heartbeat_interval_seconds",
            "heartbeat_timeout_seconds",
            "reservation_seconds",
            "offer_answer_timeout_seconds",
            "client_retention_seconds",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InvalidSetting(f"setting {name!r} must be a positive number of seconds, got {value!r}")
        if self.heartbeat_timeout_seconds < 2 * self.heartbeat_interval_seconds:
            raise InvalidSetting(
                "setting 'heartbeat_timeout_seconds' must be at least twice 'heartbeat_interval_seconds' "
                f"(got {self.heartbeat_timeout_seconds} and {self.heartbeat_interval_seconds}), "
                "so one late heartbeat does not mark a client lost"
            )
        if self.client_retention_seconds < self.heartbeat_timeout_seconds:
            raise InvalidSetting(
                "setting 'client_retention_seconds' must be at least 'heartbeat_timeout_seconds' "
                f"(got {self.client_retention_seconds} and {self.heartbeat_timeout_seconds}): "
                "a client is only expired once it has been lost"
            )
        if self.max_clients_per_source < 1:
            raise InvalidSetting(
                f"setting 'max_clients_per_source' must be at least 1, got {self.max_clients_per_source}"
            )
        self.validate_wire([self.listen])

    @property
    def resolved_store_url(self) -> str:
        """``store_url``, or the SQLite file in ``state_dir`` (a relative state dir is taken from the cwd)."""
        if self.store_url:
            return self.store_url
        return "sqlite://" + quote(str(self.state_dir.resolve() / "selector.db"))

    @property
    def sweep_interval_seconds(self) -> float:
        """How often the liveness sweeper runs: often enough that a lost client is noticed promptly."""
        return min(self.heartbeat_interval_seconds, self.heartbeat_timeout_seconds / 4)


def load(
    file: str | Path | None = None, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> SelectorSettings:
    return load_settings(SelectorSettings, prefix=PREFIX, file=file, env=env, overrides=overrides)
