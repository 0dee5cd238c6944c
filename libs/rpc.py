"""gRPC glue shared by every component: channel and server options, and error mapping.

Servers and channels themselves, with mutual TLS and authorisation, are
made in one place: :class:`libs.wire.Wire`.

Errors cross gRPC as a status code plus two trailing metadata entries,
``nsfl-error-code`` and ``nsfl-error-message``, so the caller can rebuild the
exact :class:`~libs.errors.NsflError` (``call_errors`` does it).  Servicer
methods are wrapped by :func:`handle_errors`: an ``NsflError`` becomes its
catalogue status with its user message; anything else is logged with its
traceback and becomes ``INTERNAL`` with the catalogue's public message, so no
internal detail reaches a peer.

Message size: model payloads are streamed in chunks of at most
:data:`MAX_CHUNK` bytes, so the channel limit is a small multiple of that and
never the model size: there is no 2 GiB or 4 MiB ceiling on models.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc
import grpc.aio

from libs.errors import CATALOGUE, DeadlineExceeded, NsflError, Unavailable, from_wire

log = logging.getLogger(__name__)

MAX_CHUNK = 4 * 1024 * 1024
MAX_MESSAGE = 2 * MAX_CHUNK + 64 * 1024

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
]


def _status_of(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, CATALOGUE[code].grpc_status)


async def abort_with(context: grpc.aio.ServicerContext, error: NsflError) -> None:
    context.set_trailing_metadata((
        ("nsfl-error-code", error.code),
        ("nsfl-error-message", error.message.encode("utf-8", "replace").decode("ascii", "replace")),
    ))
    await context.abort(_status_of(error.code), error.message)


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(method: F) -> F:
    """Translate exceptions of a servicer method (unary or streaming) into gRPC statuses."""

    async def translate(exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        if isinstance(exc, NsflError):
            await abort_with(context, exc)
        log.exception("unexpected error in %s", method.__qualname__)
        await abort_with(context, NsflError(CATALOGUE["Internal"].public_message))

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def gen_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:
                await translate(exc, context)

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await translate(exc, context)

    return wrapper  # type: ignore[return-value]


def error_from_rpc(exc: grpc.RpcError) -> NsflError:
    """Rebuild the server's NsflError from a failed call."""
    code = message = None
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == "nsfl-error-code":
            code = value
        elif key == "nsfl-error-message":
            message = value
    if code in CATALOGUE:
        return from_wire(str(code), str(message or exc.details()))
    status = exc.code() if hasattr(exc, "code") else None
    if status == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"service unavailable: {exc.details()}")
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"call timed out: {exc.details()}")
    return NsflError(f"remote call failed ({status.name if status else 'unknown'}): {exc.details()}")


@contextlib.contextmanager
def call_errors() -> Iterator[None]:
    """Turn a failed gRPC call into the matching NsflError (client side)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None
