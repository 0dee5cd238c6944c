"""The kopf operator of the job scheduler: the only module that registers kopf handlers.

Thin on purpose (the crate-operator habit of STYLE.md): each handler turns
kopf's arguments into a plain dict, calls one method of
:class:`~job_scheduler.k8s_reconciler.FederatedJobReconciler`, and
translates the outcome.  What the handlers mean, and why none of them can
start an update loop with the status writer, is told in
:mod:`job_scheduler.k8s_reconciler` and :mod:`job_scheduler.k8s_mirror`.

================  =======================================================
kopf cause        what happens
================  =======================================================
create, resume    ``ensure_submitted``: validate and submit (idempotent)
update of spec    ``apply_spec``: REST's update rules
delete            ``delete`` behind the ``nsfl.io/job-cleanup`` finalizer:
                  stop, wait for the scheduler's clean-up, release
login             the scheduler's own credentials (one identity)
================  =======================================================

Errors cross this boundary once, in :func:`translated`: ``Unavailable``,
``VersionConflict`` and ``DeadlineExceeded`` become a ``TemporaryError``
(kopf retries after ``retry_seconds``); every other error of the tree is a
``PermanentError`` (an invalid spec, a refused change: retrying cannot help,
so kopf does not, and ``.status`` already says why).  A bug (any other
exception) is retried by kopf with its default back-off of a minute.

kopf keeps its bookkeeping in annotations (``kopf.nsfl.io/*``) rather than
in ``.status``, so the status belongs to the mirror and the operator's
``specError``, nobody else; and only warnings become Kubernetes Events.

**Why kopf gets a thread and an event loop of its own** (as kopf's
"Embedding" guide advises) rather than the scheduler's loop: when
``kopf.operator`` stops, it waits for and then cancels *every* task of its
loop created after it started (the scheduler's RPCs, its supervisor's
loops, the caller that asked it to stop), and in the main thread it takes
over SIGTERM and SIGINT.  In its own loop it touches nothing of the
scheduler's.  The handlers still do their work on the scheduler's loop,
where the store, the locks and the API client live: each one hands its
coroutine over with ``run_coroutine_threadsafe`` and awaits the result, so
the reconciler never runs concurrently with itself on two loops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import kopf

from job_scheduler.k8s_api import FEDERATED_JOBS, KubeCredentials
from job_scheduler.k8s_reconciler import FederatedJobReconciler
from libs.errors import DeadlineExceeded, NsflError, Unavailable, VersionConflict
from libs.json_values import JsonObject

log = logging.getLogger(__name__)

FINALIZER = "nsfl.io/job-cleanup"
ANNOTATION_PREFIX = "kopf.nsfl.io"
TEMPORARY = (Unavailable, VersionConflict, DeadlineExceeded)
T = TypeVar("T")


def connection_info(credentials: KubeCredentials) -> kopf.ConnectionInfo:
    token = credentials.current_token()
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=credentials.ca_file or None,
        ca_data=credentials.ca_data or None,
        insecure=credentials.insecure or None,
        scheme="Bearer" if token else None,
        token=token or None,
        certificate_path=credentials.certificate_file or None,
        private_key_path=credentials.key_file or None,
    )


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX)
    settings.posting.level = logging.WARNING
    return settings


async def translated(call: Awaitable[T], *, retry_seconds: float) -> T:
    """``call``'s result, with the error tree translated into kopf's two kinds of failure."""
    try:
        return await call
    except TEMPORARY as exc:
        raise kopf.TemporaryError(exc.message, delay=retry_seconds) from None
    except NsflError as exc:
        raise kopf.PermanentError(exc.message) from None


def build_registry(
    reconciler: FederatedJobReconciler,
    credentials: KubeCredentials,
    on_scheduler: Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]],
    *,
    retry_seconds: float = 5.0,
) -> kopf.OperatorRegistry:
    """A fresh registry (never kopf's global one), so two operators in one process stay apart.

    ``on_scheduler`` runs each reconciler call where the scheduler's store and clients live.
    """
    registry = kopf.OperatorRegistry()
    group, version, plural = FEDERATED_JOBS.group, FEDERATED_JOBS.version, FEDERATED_JOBS.plural

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(credentials)

    @kopf.on.resume(group, version, plural, registry=registry)
    @kopf.on.create(group, version, plural, registry=registry)
    async def submitted(body: kopf.Body, **_: Any) -> None:
        await translated(on_scheduler(reconciler.ensure_submitted(_plain(body))), retry_seconds=retry_seconds)

    @kopf.on.update(group, version, plural, field="spec", registry=registry)
    async def spec_changed(body: kopf.Body, **_: Any) -> None:
        await translated(on_scheduler(reconciler.apply_spec(_plain(body))), retry_seconds=retry_seconds)

    @kopf.on.delete(group, version, plural, registry=registry)
    async def deleted(body: kopf.Body, **_: Any) -> None:
        if not await translated(on_scheduler(reconciler.delete(_plain(body))), retry_seconds=retry_seconds):
            raise kopf.TemporaryError("waiting for the job to stop and be cleaned up", delay=retry_seconds)

    return registry


class OperatorThread:
    """kopf in a thread of its own, its handlers served on the scheduler's loop (see the module doc).

    ``on_exit`` is called on the scheduler's loop if kopf ends without
    :meth:`stop` (a crash, or :meth:`request_stop`): the scheduler then stops
    too, rather than running on without its operator, and Kubernetes
    restarts it.

    kopf's flags are an ``asyncio.Event`` of kopf's own loop (to stop) and a
    ``concurrent.futures.Future`` (ready): kopf waits for a
    ``threading.Event`` flag in an executor thread that nothing could wake
    if kopf ended for another reason, and its loop would then never close.
    """

    def __init__(
        self,
        reconciler: FederatedJobReconciler,
        credentials: KubeCredentials,
        *,
        retry_seconds: float = 5.0,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._reconciler = reconciler
        self._credentials = credentials
        self._retry_seconds = retry_seconds
        self._on_exit = on_exit
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop_requested = threading.Event()
        self._stopping = False
        self._kopf_loop: asyncio.AbstractEventLoop | None = None
        self._kopf_stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, within: float) -> None:
        """Start kopf and wait until it serves; ``Unavailable`` if it ends or stalls first."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="federatedjob-operator", daemon=True)
        self._thread.start()
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(within):
                await asyncio.wrap_future(self._ready)
        except (TimeoutError, asyncio.CancelledError):
            if task is not None and task.cancelling() and not self._ready.cancelled():
                raise  # our caller gave up, not kopf
            await self.stop(5.0)
            raise Unavailable("the FederatedJob operator did not start") from None

    def request_stop(self) -> None:
        """Ask kopf to stop; safe from any thread, and before kopf has even started."""
        self._stop_requested.set()
        loop, event = self._kopf_loop, self._kopf_stop
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # kopf's loop has already closed
                loop.call_soon_threadsafe(event.set)

    async def stop(self, within: float) -> None:
        """Stop kopf (it cancels what is left of its own after a grace) and wait for its thread."""
        self._stopping = True
        self.request_stop()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await asyncio.to_thread(thread.join, within)
        if thread.is_alive():
            log.warning("the FederatedJob operator did not stop within %.0fs", within)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException:
            log.exception("the FederatedJob operator failed")
        finally:
            self._ready.cancel()  # wakes start() if kopf ended before it served
        if not self._stopping and self._on_exit is not None and self._loop is not None:
            log.error("the FederatedJob operator ended unasked")
            with contextlib.suppress(RuntimeError):  # the scheduler's loop is already closed
                self._loop.call_soon_threadsafe(self._on_exit)

    async def _serve(self) -> None:
        assert self._loop is not None
        self._kopf_loop, self._kopf_stop = asyncio.get_running_loop(), asyncio.Event()
        if self._stop_requested.is_set():  # stopped before kopf's loop existed
            return
        on_scheduler = _Bridge(self._loop)
        log.info("starting the FederatedJob operator (finalizer %s)", FINALIZER)
        await kopf.operator(
            registry=build_registry(self._reconciler, self._credentials, on_scheduler,
                                    retry_seconds=self._retry_seconds),
            settings=operator_settings(),
            standalone=True,
            clusterwide=True,
            stop_flag=self._kopf_stop,
            ready_flag=self._ready,
        )  # fmt: skip
        log.info("the FederatedJob operator stopped")


class _Bridge:
    """Runs a coroutine on the scheduler's loop and awaits it from kopf's."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def __call__(self, call: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self._loop))


def _plain(body: Mapping[str, Any]) -> JsonObject:
    """kopf's body view as a plain dict of our own (handlers never mutate kopf's copy)."""
    return copy.deepcopy(dict(body))
