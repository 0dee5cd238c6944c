"""Building and running the job scheduler: the only place that opens resources.

:class:`SchedulerApp` opens the document store and the object store, builds
the platform and the selector client, binds the ``JobControl`` server (so
the port coordinators report to is known before any launches), then starts
the supervisor, which recovers from the store before admitting anything.
Tests start it in-process on port 0, optionally with a fake platform or a
fake client availability; :func:`serve` adds what a process needs (signal
handling, a port file: :func:`libs.service.serve_until_stopped`) and is what
``python -m job_scheduler`` runs.

The wire: one :class:`~libs.wire.Wire` (role ``scheduler``) serves
``JobControl`` with mutual TLS and the authorisation guard, and dials the
selector, which must prove it is the selector.  The coordinators' issuing
CA is read at start (:class:`~job_scheduler.coordinator_certificates.CoordinatorIssuer`),
so a wrong file fails the start rather than the first launch.

Stopping the scheduler does not stop coordinators: they keep training, and
the next scheduler on the same state adopts them (DESIGN §4).  Shutdown
order: the supervisor first (no new launches), then the server with a short
grace for calls in flight, then the clients and stores they used.

With ``platform: kubernetes`` three more pieces run here, all over one
Kubernetes API client with the scheduler's credentials: the Kubernetes
platform (coordinator Pods and Services), the FederatedJob mirror (a
:class:`~job_scheduler.job_store.JobListener` that keeps each object's
``.status`` in step with the store) and the kopf operator (FederatedJobs
in, jobs out; in a thread of its own, see :mod:`job_scheduler.k8s_operator`).
They are imported only in that mode, so the local mode needs neither kopf
nor kubernetes installed.  The operator starts last and stops first, so no
handler acts on a half-closed scheduler; if it ends unasked, the scheduler
stops too (``on_operator_exit``) rather than running on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc.aio

from job_scheduler.admission import Limits
from job_scheduler.cleanup import JobCleanup
from job_scheduler.coordinator_certificates import CoordinatorIssuer
from job_scheduler.coordinators import Coordinators, LaunchConfig
from job_scheduler.grpc_service import JobControlServicer
from job_scheduler.job_store import JobLocks, JobStore
from job_scheduler.local_platform import LocalPlatform
from job_scheduler.platform import Platform
from job_scheduler.selector_client import ClientAvailability, SelectorAvailability
from job_scheduler.service import JobService
from job_scheduler.settings import SchedulerSettings
from job_scheduler.supervisor import Supervisor
from libs.objects import open_object_store
from libs.objects.protocol import ObjectStore
from libs.protos import scheduler_pb2_grpc
from libs.service import serve_until_stopped
from libs.store import DocumentStore, open_document_store
from libs.wire import Wire

if TYPE_CHECKING:
    from job_scheduler.k8s_api import KubeApi, KubeCredentials
    from job_scheduler.k8s_mirror import FederatedJobMirror
    from job_scheduler.k8s_operator import OperatorThread

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 2.0
OPERATOR_START_SECONDS = 30.0
OPERATOR_STOP_SECONDS = 15.0

_add_servicer: Callable[[scheduler_pb2_grpc.JobControlServicer, grpc.aio.Server], None] = (
    scheduler_pb2_grpc.add_JobControlServicer_to_server
)


def coordinator_issuer(settings: SchedulerSettings) -> CoordinatorIssuer | None:
    """The CA that signs coordinators' certificates; None for an insecure scheduler (plaintext coordinators)."""
    cert, key = settings.coordinator_issuer_cert, settings.coordinator_issuer_key
    if settings.insecure or settings.tls is None or cert is None or key is None:
        settings.validate()  # unless insecure, this says which setting is missing
        return None
    return CoordinatorIssuer.load(
        cert, key, trust_domain=settings.trust_domain, ca=settings.tls.ca, crl=settings.tls.crl
    )


def build_platform(settings: SchedulerSettings, kube: KubeApi | None = None) -> Platform:
    """The platform the settings name: ``local`` subprocesses or ``kubernetes`` Pods (needs ``kube``)."""
    certificates = coordinator_issuer(settings)
    if settings.platform == "kubernetes":
        from job_scheduler.k8s_platform import KubernetesPlatform

        if kube is None:
            raise ValueError("the kubernetes platform needs a Kubernetes API client")
        _, _, port = settings.listen.rpartition(":")
        # Each launch gets the scheduler's bound address; this one only has to be valid.
        pod_settings = settings.coordinator_pod_settings(f"{settings.advertise_host}:{int(port) or 1}")
        return KubernetesPlatform(
            kube, image=settings.coordinator_image, pod_settings=pod_settings, certificates=certificates
        )
    standby = settings.coordinator_standby and settings.coordinator_module == "coordinator"
    platform = LocalPlatform(
        settings.jobs_dir,
        certificates=certificates,
        python=settings.python_executable,
        module=settings.coordinator_module,
        listen_host=settings.coordinator_listen_host,
        advertise_host=settings.coordinator_advertise_host,
        standby_module="coordinator.standby" if standby else None,
    )
    platform.start_standby()
    return platform


class SchedulerApp:
    """One running scheduler: stores, platform, selector client, gRPC server, supervisor."""

    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        platform: Platform | None = None,
        availability: ClientAvailability | None = None,
        clock: Callable[[], float] | None = None,
        on_operator_exit: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.port: int | None = None
        self._on_operator_exit = on_operator_exit
        self._kube: KubeApi | None = None
        self._credentials: KubeCredentials | None = None
        self.mirror: FederatedJobMirror | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        self.operator: OperatorThread | None = None
        self._platform = platform
        self._availability = availability
        self._clock = clock
        self._store: DocumentStore | None = None
        self._objects: ObjectStore | None = None
        self._selector: SelectorAvailability | None = None
        self._server: grpc.aio.Server | None = None
        self.wire: Wire | None = None
        self._supervisor_task: asyncio.Task[None] | None = None
        self.supervisor: Supervisor | None = None
        self.service: JobService | None = None

    async def start(self) -> int:
        """Open everything, serve, start the supervisor; returns the bound port."""
        settings = self.settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.wire = wire = Wire.from_settings(settings, role="scheduler")
            self._store = await open_document_store(settings.resolved_store_url)
            self._objects = open_object_store(settings.resolved_object_store_url)
            if settings.platform == "kubernetes":
                self._open_kubernetes()
            platform = self._platform or build_platform(settings, self._kube)
            self._platform = platform
            availability = self._availability
            if availability is None:
                self._selector = SelectorAvailability(
                    settings.selector, wire, timeout=settings.selector_timeout_seconds
                )
                availability = self._selector
            jobs = JobStore(self._store, self._clock or time.time)
            if self._kube is not None:
                from job_scheduler.k8s_mirror import FederatedJobMirror

                self.mirror = FederatedJobMirror(
                    self._kube, jobs, resync_seconds=settings.status_resync_seconds
                )
                jobs.add_listener(self.mirror)
            locks = JobLocks()
            config = LaunchConfig(
                selector_address=settings.selector,
                store_url=settings.resolved_store_url,
                object_store_url=settings.resolved_object_store_url,
                stop_timeout_seconds=settings.stop_timeout_seconds,
                start_timeout_seconds=settings.start_timeout_seconds,
            )
            coordinators = Coordinators(jobs, platform, self._objects, config, self._scheduler_address)
            cleanup = JobCleanup(jobs, self._objects, platform)
            self.supervisor = Supervisor(
                jobs, coordinators, cleanup, platform, availability, locks,
                Limits(settings.max_running_jobs, settings.max_running_per_namespace),
                admission_interval=settings.admission_interval_seconds,
                watch_interval=settings.watch_interval_seconds,
                stop_timeout=settings.stop_timeout_seconds,
            )  # fmt: skip
            self.service = JobService(
                jobs,
                coordinators,
                cleanup,
                platform,
                locks,
                wake=self.supervisor.wake,
                log_tail_lines=settings.log_tail_lines,
            )
            self._server = wire.server()
            _add_servicer(JobControlServicer(self.service), self._server)
            self.port = wire.add_port(self._server, settings.listen)
            await self._server.start()
            self._supervisor_task = asyncio.create_task(
                self.supervisor.run(), name="job-scheduler-supervisor"
            )
            if self.mirror is not None:
                self._mirror_task = asyncio.create_task(self.mirror.run(), name="federatedjob-mirror")
                await self._start_operator()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "job scheduler serving on port %d (platform %s, at most %d jobs, %d per namespace)",
            self.port,
            settings.platform,
            settings.max_running_jobs,
            settings.max_running_per_namespace,
        )
        return self.port

    def _scheduler_address(self) -> str:
        return f"{self.settings.advertise_host}:{self.port}"

    def _open_kubernetes(self) -> None:
        from job_scheduler.k8s_api import KubeApi, load_credentials

        settings = self.settings
        self._credentials = load_credentials(
            server=settings.kube_api_url, token=settings.kube_api_token, ca_file=settings.kube_api_ca_file,
            insecure=settings.kube_api_insecure, kubeconfig=settings.kubeconfig, context=settings.kube_context,
        )  # fmt: skip
        self._kube = KubeApi(self._credentials)

    async def _start_operator(self) -> None:
        """Start kopf (in its own thread, see :mod:`job_scheduler.k8s_operator`) and wait until it serves."""
        from job_scheduler.k8s_operator import OperatorThread
        from job_scheduler.k8s_reconciler import FederatedJobReconciler

        assert self.service is not None and self._kube is not None and self._credentials is not None
        assert self.mirror is not None
        reconciler = FederatedJobReconciler(self.service, self._kube, settled=self.mirror.job_changed)
        self.operator = OperatorThread(reconciler, self._credentials, on_exit=self._operator_ended)
        await self.operator.start(OPERATOR_START_SECONDS)

    def _operator_ended(self) -> None:
        log.error("the FederatedJob operator ended; the scheduler stops with it")
        if self._on_operator_exit is not None:
            self._on_operator_exit()

    async def stop(self) -> None:
        """Stop the loops, stop serving, close clients and stores (idempotent); coordinators keep running."""
        for attribute in ("_supervisor_task", "_mirror_task"):
            task = getattr(self, attribute)
            if task is not None:
                await _cancelled(task)
                setattr(self, attribute, None)
        if self.operator is not None:
            await self.operator.stop(OPERATOR_STOP_SECONDS)
            self.operator = None
        if self._server is not None:
            await self._server.stop(STOP_GRACE_SECONDS)
            self._server = None
        if self._selector is not None:
            await self._selector.close()
            self._selector = None
        if self._platform is not None:
            await self._platform.close()
        if self._kube is not None:
            await self._kube.close()
            self._kube = None
        if self._objects is not None:
            await self._objects.close()
            self._objects = None
        if self._store is not None:
            await self._store.close()
            self._store = None


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; a cancellation it swallowed is repeated."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(settings: SchedulerSettings, *, port_file: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully (coordinators keep running)."""
    stop = asyncio.Event()
    app = SchedulerApp(settings, on_operator_exit=stop.set)
    await serve_until_stopped(app, name="job scheduler", port_file=port_file, stop=stop)
