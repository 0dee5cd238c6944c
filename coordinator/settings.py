"""Settings of one coordinator process (``NSFL_COORDINATOR_*`` or command-line flags).

The wire fields (``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_crl``,
``trust_domain``, ``insecure``) come from :class:`~libs.wire.WireSettings`:
the job scheduler passes them as ``NSFL_COORDINATOR_TLS_*`` variables, with a
certificate it signed for this one job, both to a coordinator started cold
and to a standby at hand-over (:mod:`coordinator.standby` replaces the
environment before the settings are read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from libs.errors import InvalidSetting
from libs.wire import WireSettings


@dataclass(frozen=True)
class CoordinatorSettings(WireSettings):
    job: Path = Path("job.json")
    workdir: Path = Path(".")
    selector: str = "127.0.0.1:50051"
    listen: str = "127.0.0.1:0"
    advertise_host: str = "127.0.0.1"
    document_store: str = ""
    object_store: str = ""
    scheduler: str = ""
    token: str = ""
    log_json: bool = False
    log_level: str = "INFO"
    # Where job script bundles are unpacked; a job's extenders.file is resolved inside it (None: no extenders).
    extenders_root: Path | None = None

    def validate(self) -> None:
        if not self.document_store:
            raise InvalidSetting("setting 'document_store' is required (e.g. sqlite:///state/nsfl.db)")
        if not self.object_store:
            raise InvalidSetting("setting 'object_store' is required (e.g. file:///state/objects)")
        if ":" not in self.listen:
            raise InvalidSetting(f"setting 'listen' must be host:port, got {self.listen!r}")
        self.validate_wire([self.listen, self.selector, self.scheduler])
