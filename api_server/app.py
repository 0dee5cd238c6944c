"""Building and running the API server: the only place that opens resources.

:func:`make_app` returns a ready ``web.Application``: middlewares (metrics
outermost, so error responses are counted with their real status; then the
error translator), the route table, the OpenAPI document built from it, and
a ``cleanup_ctx`` that opens the document store, the object store and the
gRPC channels to the scheduler and the selector at startup and closes them,
in reverse order, at cleanup.  Any of the four can be injected instead
(tests, or an embedding process that already has them); injected ones
belong to the caller and are not closed here.

Both channels come from one :class:`~libs.wire.Wire` (mutual TLS as the
``api-server`` identity; each channel accepts only the identity it expects
at the other end).  With the setting ``pki_dir``, the enrolment service is
opened over the same document store and that PKI.

:func:`serve` adds what a process needs: the listening site
(:class:`ApiService`), a port file written once serving (so a launcher can
start the server on port 0), and a clean stop on SIGTERM/SIGINT
(:func:`libs.service.serve_until_stopped`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from api_server.auth import TokenRegistry, load_token_file
from api_server.enrollment import Enrollment
from api_server.errors import error_middleware
from api_server.metrics import RequestMetrics, metrics_middleware
from api_server.openapi import build_document
from api_server.registry import ModelRegistry
from api_server.route_table import install
from api_server.routes import all_routes
from api_server.scheduler_client import GrpcJobScheduler, JobScheduler
from api_server.selector_client import ClientDirectory, GrpcClientDirectory
from api_server.settings import ApiSettings
from api_server.state import (
    ENROLLMENT,
    METRICS,
    OBJECTS,
    OPENAPI,
    REGISTRY,
    SCHEDULER,
    SELECTOR,
    SETTINGS,
    STORE,
    TOKENS,
)
from libs.objects import ObjectStore, open_object_store
from libs.pki.directory import PkiDirectory
from libs.service import serve_until_stopped
from libs.store import DocumentStore, open_document_store
from libs.wire import Wire

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 10.0


def make_app(
    settings: ApiSettings,
    *,
    scheduler: JobScheduler | None = None,
    selector: ClientDirectory | None = None,
    store: DocumentStore | None = None,
    objects: ObjectStore | None = None,
    tokens: TokenRegistry | None = None,
) -> web.Application:
    """The API server application; dependencies not given are opened from ``settings`` at startup."""
    metrics = RequestMetrics()
    app = web.Application(
        middlewares=[metrics_middleware(metrics), error_middleware],
        # aiohttp's own cap, for anything that would call request.read(); our readers cap earlier.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    if tokens is None:
        assert settings.token_file is not None  # ApiSettings.validate insists on it
        tokens = load_token_file(settings.token_file)
    app[TOKENS] = tokens
    routes = all_routes()
    install(app, routes)
    app[OPENAPI] = build_document(routes)
    app.cleanup_ctx.append(_dependencies(settings, scheduler, selector, store, objects))
    app.on_response_prepare.append(_hide_server_banner)
    return app


def _dependencies(
    settings: ApiSettings,
    scheduler: JobScheduler | None,
    selector: ClientDirectory | None,
    store: DocumentStore | None,
    objects: ObjectStore | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        closers: list[Callable[[], Awaitable[None]]] = []
        try:
            if settings.uses_state_dir:
                settings.state_dir.mkdir(parents=True, exist_ok=True)
            opened_store = store or await open_document_store(settings.resolved_store_url)
            if store is None:
                closers.append(opened_store.close)
            opened_objects = objects or open_object_store(settings.resolved_object_store_url)
            if objects is None:
                closers.append(opened_objects.close)
            opened_scheduler, opened_selector = _grpc_peers(settings, scheduler, selector, closers)
            if settings.pki_dir is not None:
                pki = PkiDirectory(settings.pki_dir)
                app[ENROLLMENT] = await asyncio.to_thread(
                    Enrollment.open, opened_store, pki, settings.trust_domain
                )
            app[STORE] = opened_store
            app[OBJECTS] = opened_objects
            app[SCHEDULER] = opened_scheduler
            app[SELECTOR] = opened_selector
            app[REGISTRY] = ModelRegistry(opened_store, opened_objects)
            yield
        finally:
            for close in reversed(closers):
                try:
                    await close()
                except Exception:
                    log.exception("closing a dependency failed")

    return lifecycle


def _grpc_peers(
    settings: ApiSettings,
    scheduler: JobScheduler | None,
    selector: ClientDirectory | None,
    closers: list[Callable[[], Awaitable[None]]],
) -> tuple[JobScheduler, ClientDirectory]:
    """The scheduler and the selector: as injected, or over channels of this process's one wire."""
    if scheduler is not None and selector is not None:
        return scheduler, selector
    wire = Wire.from_settings(settings, role="api-server")
    if scheduler is None:
        scheduler = GrpcJobScheduler(
            settings.scheduler_address, wire=wire, timeout=settings.rpc_timeout_seconds
        )
        closers.append(scheduler.close)
    if selector is None:
        selector = GrpcClientDirectory(
            settings.selector_address, wire=wire, timeout=settings.rpc_timeout_seconds
        )
        closers.append(selector.close)
    return scheduler, selector


async def _hide_server_banner(request: web.Request, response: web.StreamResponse) -> None:
    # The default banner names the exact aiohttp and Python versions: free help for an attacker.
    response.headers["Server"] = "nsfl-api"


def bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the API server is not listening")


class ApiService:
    """The application behind a TCP site: a :class:`libs.service.Service`."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        # The access log shows the request line and outcome; never headers, so never a token.
        self._runner = web.AppRunner(make_app(settings), access_log_format='%a "%r" %s %b %Tfs')

    async def start(self) -> int:
        settings = self.settings
        try:
            await self._runner.setup()
            site = web.TCPSite(
                self._runner, settings.listen_host, settings.listen_port,
                shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
            )  # fmt: skip
            await site.start()
        except BaseException:
            await self.stop()
            raise
        port = bound_port(self._runner)
        log.info("API server listening on %s:%d", settings.listen_host, port)
        return port

    async def stop(self) -> None:
        await self._runner.cleanup()


async def serve(settings: ApiSettings, *, port_file: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; the port goes to ``port_file`` or the setting's."""
    port_file = port_file or settings.port_file
    await serve_until_stopped(ApiService(settings), name="API server", port_file=port_file)
