"""Settings of the API server: one frozen dataclass, loaded once at start.

Loaded by :func:`load` from defaults, an optional YAML/JSON file, then
``NSFL_API_*`` variables (``NSFL_API_LISTEN=0.0.0.0:8080``), strictly: an
unknown key is an error, not a silent default.

Why the API server has two size limits: JSON and YAML bodies (job specs,
small requests) are parsed in memory, so ``max_body_bytes`` keeps them
small (1 MiB, the same bound as the job spec parser); a model upload is
streamed to the object store and never held in memory, so
``max_model_bytes`` can be large (4 GiB) without costing memory.  Both are
enforced before the bytes are buffered: a declared ``Content-Length`` over
the limit is refused before anything is read.

Why the gRPC links need mutual TLS: the API server is the only caller
the scheduler accepts for its user RPCs, on behalf of end users whose
namespaces it passes along (issue 12), so its channels to the scheduler and
the selector use the shared wire settings (:class:`~libs.wire.WireSettings`:
``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_crl``, ``trust_domain``,
``insecure``) and refuse to start without them.  The REST listener is plain
HTTP here (TLS for it is a front proxy's or an ingress's job); those wire
settings do not touch it.

Why ``pki_dir`` is optional: with it (the directory ``nsfl-ctl pki init``
made; the standalone launcher passes ``NSFL_API_PKI_DIR``), the API server
redeems enrolment tokens and revokes clients' certificates; without it those
endpoints answer 503 saying to set it, and everything else works.

Why a token file is required: the API is the one public entry (DESIGN §9),
so there is no unauthenticated mode to fall into by forgetting a setting.
The standalone launcher writes a token file next to its state.

The store URLs default to files in ``state_dir`` (``nsfl.db`` and
``objects/``); they must name the same store the job scheduler and the
coordinators use, because job reads go to the store directly.
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

PREFIX = "NSFL_API_"
MIB = 1024 * 1024


def _check_address(name: str, value: str, *, allow_port_zero: bool) -> None:
    host, sep, port = value.rpartition(":")
    lowest = 0 if allow_port_zero else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise InvalidSetting(
            f"setting {name!r} must be host:port with a port in {lowest}-65535, got {value!r}"
        )


@dataclass(frozen=True)
class ApiSettings(WireSettings):
    """Everything the API server process needs to know, validated at start."""

    listen: str = "127.0.0.1:8080"
    scheduler_address: str = "127.0.0.1:50052"
    selector_address: str = "127.0.0.1:50051"
    state_dir: Path = Path("~/.nsfl/state").expanduser()
    # Empty: ``sqlite:///<state_dir>/nsfl.db`` and ``file:///<state_dir>/objects``.
    store_url: str = ""
    object_store_url: str = ""
    # YAML: ``tokens: [{token | sha256, namespaces: [...] or ["*"], role, name, expires?}]`` (see auth.py).
    token_file: Path | None = None
    max_body_bytes: int = 1 * MIB
    max_model_bytes: int = 4 * 1024 * MIB
    port_file: Path | None = None
    # Deadline of one call to the scheduler or the selector.
    rpc_timeout_seconds: float = 10.0
    # How long /readyz waits for the scheduler's channel to connect.
    ready_timeout_seconds: float = 2.0
    # The PKI directory (`nsfl-ctl pki init`): enrolment and client revocation need it.
    pki_dir: Path | None = None
    log_json: bool = False
    log_level: str = "INFO"

    def validate(self) -> None:
        _check_address("listen", self.listen, allow_port_zero=True)
        _check_address("scheduler_address", self.scheduler_address, allow_port_zero=False)
        _check_address("selector_address", self.selector_address, allow_port_zero=False)
        if self.token_file is None:
            raise InvalidSetting(
                "setting 'token_file' is required: the API accepts only bearer tokens listed in it "
                "(YAML: tokens: [{token, namespaces, role, name}])"
            )
        if not 1024 <= self.max_body_bytes <= 64 * MIB:
            raise InvalidSetting(
                f"setting 'max_body_bytes' must be between 1024 and {64 * MIB}, got {self.max_body_bytes}"
            )
        if self.max_model_bytes < 1024:
            raise InvalidSetting(
                f"setting 'max_model_bytes' must be at least 1024, got {self.max_model_bytes}"
            )
        for name in ("rpc_timeout_seconds", "ready_timeout_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InvalidSetting(f"setting {name!r} must be a positive number of seconds, got {value!r}")
        # The gRPC links it dials; the REST listener is HTTP and not the wire's business.
        self.validate_wire([self.scheduler_address, self.selector_address])

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return "sqlite://" + quote(str(self.state_dir.resolve() / "nsfl.db"))

    @property
    def resolved_object_store_url(self) -> str:
        if self.object_store_url:
            return self.object_store_url
        return "file://" + quote(str(self.state_dir.resolve() / "objects"))

    @property
    def uses_state_dir(self) -> bool:
        """Whether a default store lives in ``state_dir`` (so the directory must exist)."""
        return not self.store_url or not self.object_store_url


def load(
    file: str | Path | None = None, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> ApiSettings:
    return load_settings(ApiSettings, prefix=PREFIX, file=file, env=env, overrides=overrides)
