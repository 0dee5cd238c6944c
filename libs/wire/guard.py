"""The server interceptor that enforces the authorisation table on every call.

It wraps each method handler so the check runs with the call's context (grpc's
interceptor hook itself sees only the method name): the peer's identity comes
from its verified certificate (the one ``spiffe://`` URI SAN), a revoked
certificate is refused as ``UNAUTHENTICATED``, and the row of
:data:`~libs.wire.authorization.POLICY` decides, with the request for unary
calls.  The caller is then available to the servicer through
:func:`current_caller`, for the checks only it can make (a task's ticket, a
stream's registration).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
import grpc.aio
from cryptography import x509

from libs.errors import PermissionDenied, Unauthenticated, ValidationFailed
from libs.pki.authority import identity_of
from libs.pki.identity import Identity
from libs.pki.revocation import RevocationCheck
from libs.rpc import abort_with
from libs.wire.authorization import POLICY, Rule, decide

log = logging.getLogger(__name__)

_CALLER: ContextVar[Identity | None] = ContextVar("nsfl_caller", default=None)
_CACHE_LIMIT = 4096


def current_caller() -> Identity | None:
    """The verified identity of the call being served (None only on an explicitly insecure server)."""
    return _CALLER.get()


def require_caller_is_client(client_id: str) -> None:
    """Refuse unless the caller is ``client/<client_id>`` (no-op on an insecure server)."""
    caller = _CALLER.get()
    if caller is not None and caller.client_id != client_id:
        raise PermissionDenied(f"{caller.uri} cannot act for client {client_id[:80]!r}")


# grpc ships no type stubs, so its base class is Any to mypy.
class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self, server: Identity | None, revocations: RevocationCheck, policy: dict[str, Rule] = POLICY
    ) -> None:
        self._server = server
        self._revocations = revocations
        self._policy = policy
        self._peers: dict[bytes, tuple[Identity | None, x509.Certificate | None, str]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrap(handler, handler_call_details.method)

    # --- deciding ------------------------------------------------------------------------------

    def _peer(
        self, context: grpc.aio.ServicerContext
    ) -> tuple[Identity | None, x509.Certificate | None, str]:
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return None, None, "no client certificate"
        pem = pems[0]
        known = self._peers.get(pem)
        if known is None:
            try:
                cert = x509.load_pem_x509_certificate(pem)
                known = (identity_of(cert), cert, "")
            except (ValueError, ValidationFailed) as exc:
                known = (None, None, str(getattr(exc, "message", exc)))
            if len(self._peers) >= _CACHE_LIMIT:
                self._peers.clear()
            self._peers[pem] = known
        return known

    async def _authorize(self, method: str, context: grpc.aio.ServicerContext, request: Any) -> Identity:
        identity, cert, problem = self._peer(context)
        if identity is None or cert is None:
            log.warning("refused %s: %s", method, problem)
            await abort_with(context, Unauthenticated(f"refused: {problem}"))
            raise AssertionError("unreachable")  # abort_with raises
        if self._revocations.is_revoked(cert):
            log.warning("refused %s from %s: its certificate is revoked", method, identity.uri)
            await abort_with(context, Unauthenticated(f"the certificate of {identity.uri} is revoked"))
        decision = decide(method, identity, self._server, request, self._policy)
        if not decision.allowed:
            log.warning("refused %s from %s: %s", method, identity.uri, decision.reason)
            error = Unauthenticated if decision.code == "Unauthenticated" else PermissionDenied
            await abort_with(context, error(decision.reason))
        return identity

    # --- wrapping the four handler shapes ---------------------------------------------------------

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        kinds = {
            (False, False): (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
            (False, True): (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
            (True, False): (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
            (True, True): (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
        }
        inner, make = kinds[(handler.request_streaming, handler.response_streaming)]
        unary_request = not handler.request_streaming
        authorize = self._authorize

        if inspect.isasyncgenfunction(inner):

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                identity = await authorize(method, context, request if unary_request else None)
                token = _CALLER.set(identity)
                try:
                    async for item in inner(request, context):
                        yield item
                finally:
                    _CALLER.reset(token)

            behaviour: Any = streaming
        else:

            async def direct(request: Any, context: grpc.aio.ServicerContext) -> Any:
                identity = await authorize(method, context, request if unary_request else None)
                token = _CALLER.set(identity)
                try:
                    return await inner(request, context)
                finally:
                    _CALLER.reset(token)

            behaviour = direct
        return make(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
