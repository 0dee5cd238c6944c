"""Building and running the client selector: the only place that opens resources.

:class:`SelectorApp` opens the document store, loads the registry, starts
the gRPC server (mutual TLS and the authorisation guard, through the
process's one :class:`~libs.wire.Wire`) and the sweeper (liveness, expired
reservations, clients past their retention), and closes them in reverse order.
Tests start it in-process on port 0; :func:`serve` adds what a process needs
(signal handling, a port file: :func:`libs.service.serve_until_stopped`) and
is what ``python -m client_selector`` runs.

Shutdown order matters: the selector first closes every task-manager stream
with ``UNAVAILABLE`` (so task managers reconnect with backoff to the next
instance) and writes the last seen times, then the server stops, with a short
grace for unary calls in flight, and only then is the store closed, so no
handler writes to a closed store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import grpc.aio

from client_selector.grpc_service import SelectorServicer
from client_selector.registry_store import RegistryStore
from client_selector.selector import Selector
from client_selector.settings import SelectorSettings
from libs.errors import NsflError
from libs.protos import selector_pb2_grpc
from libs.service import serve_until_stopped
from libs.store import DocumentStore, open_document_store
from libs.wire import Wire

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 2.0

# The generated registration function carries no annotations (no ``*_pb2_grpc.pyi`` is generated);
# naming its type here keeps the call checked without a pragma.
_add_servicer: Callable[[selector_pb2_grpc.ClientSelectorServicer, grpc.aio.Server], None] = (
    selector_pb2_grpc.add_ClientSelectorServicer_to_server
)


class SelectorApp:
    """One running selector: store, registry, gRPC server and sweeper."""

    def __init__(self, settings: SelectorSettings) -> None:
        self.settings = settings
        self.wire = Wire.from_settings(settings, role="selector")
        self.port: int | None = None
        self._store: DocumentStore | None = None
        self._selector: Selector | None = None
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def selector(self) -> Selector:
        if self._selector is None:
            raise RuntimeError("the selector app is not started")
        return self._selector

    async def start(self) -> int:
        """Open everything and serve; returns the bound port (useful with port 0)."""
        settings = self.settings
        if not settings.store_url:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._store = await open_document_store(settings.resolved_store_url)
        try:
            self._selector = Selector(
                RegistryStore(self._store),
                heartbeat_timeout=settings.heartbeat_timeout_seconds,
                reservation_seconds=settings.reservation_seconds,
                retention_seconds=settings.client_retention_seconds,
                max_clients_per_source=settings.max_clients_per_source,
            )
            loaded = await self._selector.load()
            self._server = self.wire.server()
            _add_servicer(
                SelectorServicer(
                    self._selector,
                    heartbeat_interval=settings.heartbeat_interval_seconds,
                    heartbeat_timeout=settings.heartbeat_timeout_seconds,
                    answer_timeout=settings.offer_answer_timeout_seconds,
                ),
                self._server,
            )
            self.port = self.wire.add_port(self._server, settings.listen)
            await self._server.start()
        except BaseException:
            await self.stop()
            raise
        self._sweeper = asyncio.create_task(self._sweep_forever())
        log.info(
            "client selector serving on port %d (%d known clients, %s)",
            self.port,
            loaded,
            "mutual TLS" if self.wire.secure else "INSECURE plaintext",
        )
        return self.port

    async def stop(self) -> None:
        """Close streams, stop serving, close the store (idempotent)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._selector is not None:
            with contextlib.suppress(NsflError):
                await self._selector.close()
        if self._server is not None:
            await self._server.stop(STOP_GRACE_SECONDS)
            self._server = None
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                await self.selector.sweep()
            except NsflError as exc:  # the store is down: keep serving, try again next time
                log.warning("liveness sweep failed: %s", exc)
            except Exception:
                # A dead sweeper would leave silent clients selectable forever: log and keep sweeping.
                log.exception("liveness sweep failed")


async def serve(settings: SelectorSettings, *, port_file: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    await serve_until_stopped(SelectorApp(settings), name="client selector", port_file=port_file)
