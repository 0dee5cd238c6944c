"""Settings of the job scheduler: one frozen dataclass, loaded once at start.

Loaded by :func:`load` from defaults, an optional YAML/JSON file, then
``NSFL_SCHEDULER_*`` variables (``NSFL_SCHEDULER_MAX_RUNNING_JOBS=8``),
strictly: an unknown key is an error, not a silent default.

Two addresses are easy to confuse, so both are spelled out:

- ``listen`` is where this scheduler serves ``JobControl``; ``advertise_host``
  is the host coordinators dial back to report progress (with the bound
  port, so ``listen`` may use port 0);
- ``coordinator_listen_host`` / ``coordinator_advertise_host`` are handed to
  each coordinator: where it serves its own ``Coordinator`` service and the
  host it tells clients to dial.  On one machine both are loopback; for
  clients on other hosts the advertise host must be reachable from them.

Defaults put everything under ``state_dir``: the SQLite store
(``nsfl.db``, shared with the API server and the coordinators), the object
files (``objects/``) and one work directory per job (``jobs/<ns>/<name>/``).

With ``platform: kubernetes`` the ``coordinator_*`` settings shape the
coordinator Pods (:meth:`SchedulerSettings.coordinator_pod_settings`) and the
``kube_*`` settings say how to reach the API server.  Left empty, the
scheduler uses its Pod's service account (in-cluster) or, outside a cluster,
the kubeconfig; ``kube_api_url`` with ``kube_api_token`` is for development
and tests (an emulated API server), and the token is never logged.
Credentials of MongoDB and S3 never pass through these settings on their way
to a coordinator: its Pod reads them from the Secrets named by
``coordinator_document_store_secret`` and ``coordinator_object_store_secret``.

The wire (:class:`~libs.wire.WireSettings`): the scheduler serves and dials
with mutual TLS (``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_crl``), and it
signs each coordinator's short-lived certificate at launch with the issuing
CA named by ``coordinator_issuer_cert`` and ``coordinator_issuer_key`` (in
standalone mode the PKI directory's ``issuer.pem`` and ``issuer-key.pem``).
Both are required unless ``insecure`` (loopback tests only), where the
coordinators run in plaintext too.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from libs.errors import InvalidSetting
from libs.json_values import JsonObject
from libs.k8s.pod_settings import CoordinatorPodSettings
from libs.settings import load_settings
from libs.wire import WireSettings

PREFIX = "NSFL_SCHEDULER_"
PLATFORMS = ("local", "kubernetes")


@dataclass(frozen=True)
class SchedulerSettings(WireSettings):
    """Everything the scheduler process needs to know, validated at start."""

    listen: str = "127.0.0.1:50052"
    advertise_host: str = "127.0.0.1"
    state_dir: Path = Path("~/.nsfl/state").expanduser()
    # Empty: ``sqlite:///<state_dir>/nsfl.db`` and ``file:///<state_dir>/objects``.
    store_url: str = ""
    object_store_url: str = ""
    selector: str = "127.0.0.1:50051"
    selector_timeout_seconds: float = 5.0
    platform: str = "local"
    max_running_jobs: int = 4
    max_running_per_namespace: int = 2
    admission_interval_seconds: float = 0.2
    watch_interval_seconds: float = 0.5
    # A STOPPING coordinator that has not exited after this long is killed (it ends STOPPED).
    stop_timeout_seconds: float = 120.0
    # A coordinator that has not reported RUNNING this long after its launch is killed (a crash).
    start_timeout_seconds: float = 300.0
    coordinator_listen_host: str = "127.0.0.1"
    coordinator_advertise_host: str = "127.0.0.1"
    python_executable: str = sys.executable
    # The module run as ``python -m <module>``; tests point it at a fake coordinator.
    coordinator_module: str = "coordinator"
    # Keep one coordinator started and imported ahead of need, so a job starts without waiting for
    # Python and the coordinator's imports (platform "local", real coordinator module only).
    coordinator_standby: bool = True
    log_tail_lines: int = 100
    log_json: bool = False
    log_level: str = "INFO"
    # --- platform "kubernetes" ----------------------------------------------------------------
    coordinator_image: str = ""
    coordinator_image_pull_policy: str = "IfNotPresent"
    coordinator_service_type: str = "ClusterIP"
    coordinator_advertise_host_template: str = "{service}.{namespace}.svc"
    coordinator_document_store_secret: str = "nsfl-mongodb"
    coordinator_object_store_secret: str = "nsfl-s3"
    coordinator_service_account: str = ""
    coordinator_termination_grace_seconds: int = 120
    coordinator_log_level: str = "INFO"
    # Empty: in-cluster service account, else the kubeconfig (``kubeconfig``, ``kube_context``).
    kube_api_url: str = ""
    kube_api_token: str = field(default="", repr=False)
    kube_api_ca_file: str = ""
    kube_api_insecure: bool = False
    kubeconfig: str = ""
    kube_context: str = ""
    # How often every FederatedJob's .status is compared with the store, besides after each change.
    status_resync_seconds: float = 60.0
    # --- coordinators' certificates ---------------------------------------------------------------
    # The CA that signs each coordinator's certificate at launch: its certificate (then the chain above
    # it but the root) and its key.  Required unless 'insecure'.
    coordinator_issuer_cert: Path | None = None
    coordinator_issuer_key: Path | None = None

    def validate(self) -> None:
        _check_address("listen", self.listen)
        if self.platform not in PLATFORMS:
            raise InvalidSetting(
                f"setting 'platform' must be one of {', '.join(PLATFORMS)}, got {self.platform!r}"
            )
        for name in ("max_running_jobs", "max_running_per_namespace", "log_tail_lines"):
            if getattr(self, name) < 1:
                raise InvalidSetting(f"setting {name!r} must be at least 1, got {getattr(self, name)!r}")
        for name in (
            "admission_interval_seconds",
            "watch_interval_seconds",
            "stop_timeout_seconds",
            "start_timeout_seconds",
            "selector_timeout_seconds",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InvalidSetting(f"setting {name!r} must be a positive number of seconds, got {value!r}")
        for name in ("advertise_host", "selector", "coordinator_module", "python_executable"):
            if not getattr(self, name):
                raise InvalidSetting(f"setting {name!r} must not be empty")
        if self.platform == "kubernetes":
            self._validate_kubernetes()
        self._validate_wire()

    def _validate_wire(self) -> None:
        # A local coordinator listens on coordinator_listen_host: plaintext only if that is loopback too.
        addresses = [self.listen, self.selector]
        if self.platform == "local":
            addresses.append(f"{self.coordinator_listen_host}:0")
        self.validate_wire(addresses)
        given = [f for f in (self.coordinator_issuer_cert, self.coordinator_issuer_key) if f is not None]
        if len(given) == 1:
            raise InvalidSetting(
                "settings 'coordinator_issuer_cert' and 'coordinator_issuer_key' go together: give both or neither"
            )
        if not given and not self.insecure:
            raise InvalidSetting(
                "the scheduler signs each coordinator's certificate: give 'coordinator_issuer_cert' and "
                "'coordinator_issuer_key' (a PKI directory's issuer.pem and issuer-key.pem, made by "
                "`nsfl-ctl pki init`); for a test on loopback only, set 'insecure: true'"
            )

    def _validate_kubernetes(self) -> None:
        if not self.coordinator_image:
            raise InvalidSetting("setting 'coordinator_image' is required with platform 'kubernetes'")
        if not math.isfinite(self.status_resync_seconds) or self.status_resync_seconds <= 0:
            raise InvalidSetting("setting 'status_resync_seconds' must be a positive number of seconds")
        _, _, port = self.listen.rpartition(":")
        # The port coordinators dial is only known once bound; any valid one checks the rest.
        self.coordinator_pod_settings(f"{self.advertise_host}:{int(port) or 1}").validate()

    def coordinator_pod_settings(self, scheduler: str) -> CoordinatorPodSettings:
        """How coordinator Pods are built, given the address they report progress to."""
        return CoordinatorPodSettings(
            selector=self.selector,
            scheduler=scheduler,
            document_store_secret=self.coordinator_document_store_secret,
            object_store_secret=self.coordinator_object_store_secret,
            image_pull_policy=self.coordinator_image_pull_policy,
            service_account_name=self.coordinator_service_account or None,
            service_type=self.coordinator_service_type,
            advertise_host_template=self.coordinator_advertise_host_template,
            termination_grace_seconds=self.coordinator_termination_grace_seconds,
            log_level=self.coordinator_log_level,
            log_json=True,
        )

    @property
    def resolved_store_url(self) -> str:
        """``store_url``, or the SQLite file in ``state_dir`` shared by the control plane."""
        if self.store_url:
            return self.store_url
        return "sqlite://" + quote(str(self.state_dir.resolve() / "nsfl.db"))

    @property
    def resolved_object_store_url(self) -> str:
        if self.object_store_url:
            return self.object_store_url
        return "file://" + quote(str(self.state_dir.resolve() / "objects"))

    @property
    def jobs_dir(self) -> Path:
        """Where the local platform keeps one work directory per job."""
        return self.state_dir.resolve() / "jobs"


def _check_address(name: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidSetting(f"setting {name!r} must be host:port with a port in 0-65535, got {value!r}")


def load(
    file: str | Path | None = None, overrides: JsonObject | None = None, env: dict[str, str] | None = None
) -> SchedulerSettings:
    return load_settings(SchedulerSettings, prefix=PREFIX, file=file, env=env, overrides=overrides)
