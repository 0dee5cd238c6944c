"""A small, synchronous REST client for the nsfl API.

Why synchronous ``urllib`` and not aiohttp: a CLI command makes a handful of
sequential calls, and a blocking client keeps every command a plain
function (no event loop to start, nothing to leak on Ctrl-C).  Uploads and
downloads still stream in 1 MiB chunks and never hold a model in memory.

Errors come back as the nsfl error tree, so commands never look at HTTP:

* a JSON error body ``{"error": {"code", "message", "details"}}`` is
  rebuilt with :func:`libs.errors.from_wire`, so its exit code is the
  catalogue's;
* another error status maps to the catalogue code with that HTTP status;
* a refused or dropped connection is ``Unavailable`` with a hint to start
  the control plane, a timeout is ``DeadlineExceeded``.

Proxies from the environment are honoured except for loopback addresses:
a corporate ``https_proxy`` must not swallow calls to a standalone control
plane on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

from libs.errors import (
    CATALOGUE,
    ChecksumMismatch,
    CorruptPayload,
    DeadlineExceeded,
    InvalidSetting,
    NsflError,
    Unauthenticated,
    Unavailable,
    from_wire,
)

CHUNK = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
DEFAULT_TIMEOUT = 30.0
_CODE_BY_STATUS = {entry.http_status: code for code, entry in reversed(CATALOGUE.items())}


def path_of(*segments: str) -> str:
    """A URL path from segments, each percent-encoded (names never smuggle ``/`` or ``..``)."""
    return "/" + "/".join(quote(segment, safe=":") for segment in segments)


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    sha256: str


class ApiClient:
    """Calls to one API base URL with one bearer token."""

    def __init__(
        self, base_url: str, token: str = "", *, timeout: float = DEFAULT_TIMEOUT, ca_file: Path | None = None
    ) -> None:
        """``ca_file``: the CA bundle that verifies an ``https://`` API (default: the system's)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = []
        if is_loopback_host(urlsplit(self.base_url).hostname or ""):
            handlers.append(urllib.request.ProxyHandler({}))
        if ca_file is not None:
            handlers.append(urllib.request.HTTPSHandler(context=_tls_context(ca_file)))
        self._opener = urllib.request.build_opener(*handlers)

    # --- JSON and text ------------------------------------------------------------------------

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.call("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body={} if body is None else body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def call(
        self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        """The decoded JSON reply (None for an empty one)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self._open(method, path, query=query, data=data, headers=headers) as response:
            raw = self._read(response)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise NsflError(f"the API at {self.base_url} sent a reply that is not JSON ({path})") from None

    def text(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        with self._open("GET", path, query=query) as response:
            return self._read(response).decode("utf-8", errors="replace")

    # --- streams ------------------------------------------------------------------------------

    def upload(self, method: str, path: str, source: Path, *, query: Mapping[str, Any] | None = None) -> Any:
        """Stream the file ``source`` as the request body; the decoded JSON reply."""
        size = source.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with (
            source.open("rb") as handle,
            self._open(method, path, query=query, data=handle, headers=headers) as reply,
        ):
            raw = self._read(reply)
        return json.loads(raw) if raw else None

    def download(self, path: str, target: Path, *, expected_sha256: str | None = None) -> Download:
        """Stream the reply body into ``target`` (written whole or not at all), checking size and SHA-256."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        digest = hashlib.sha256()
        size = 0
        try:
            with self._open("GET", path) as response, partial.open("wb") as handle:
                announced = {d.lower() for d in (response.headers.get("X-Nsfl-Sha256"), expected_sha256) if d}
                length = response.headers.get("Content-Length")
                for chunk in _chunks(response):
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if length is not None and size != int(length):
                raise CorruptPayload(f"the download of {path} ended after {size} of {length} bytes; retry")
            if any(value != digest.hexdigest() for value in announced):
                raise ChecksumMismatch(f"the download of {path} does not match its SHA-256; retry")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return Download(target, size, digest.hexdigest())

    # --- plumbing -----------------------------------------------------------------------------

    def _open(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        data: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        url = self.base_url + path
        if query:
            url += "?" + urlencode(
                {k: _query_value(v) for k, v in query.items() if v is not None}, doseq=True
            )
        request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            response: http.client.HTTPResponse = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            with error:
                raise self._error_of(error.code, error.read(MAX_ERROR_BODY), path) from None
        except urllib.error.URLError as error:
            raise self._unreachable(error.reason) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise self._unreachable(error) from None
        return response

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return bytes(response.read())
        except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise self._unreachable(error) from None

    def _unreachable(self, reason: object) -> NsflError:
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return DeadlineExceeded(f"the API at {self.base_url} did not answer within {self.timeout:g}s")
        if isinstance(reason, ssl.SSLError):
            return Unavailable(
                f"the API at {self.base_url} failed the TLS check ({getattr(reason, 'reason', None) or reason}); "
                "give the CA that signed its certificate"
            )
        return Unavailable(
            f"cannot reach the API at {self.base_url}: is the control plane up? (nsfl-ctl standalone up)",
            details={"reason": str(reason)},
        )

    def _error_of(self, status: int, raw: bytes, path: str) -> NsflError:
        error = _wire_error(raw)
        if error is None:
            code = _CODE_BY_STATUS.get(status, "Internal")
            message = f"{CATALOGUE[code].public_message} (HTTP {status} from {self.base_url}{path})"
            error = from_wire(code, message)
        if isinstance(error, Unauthenticated) and not self.token:
            error = Unauthenticated(
                f"{error.message}; no token is configured: nsfl-ctl config set token TOKEN (or set $NSFL_TOKEN)"
            )
        return error


def _wire_error(raw: bytes) -> NsflError | None:
    """The error in a REST error body, or None when the body is not one."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    inner = body.get("error") if isinstance(body, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("code"), str):
        return None
    details = inner.get("details") if isinstance(inner.get("details"), dict) else None
    return from_wire(inner["code"], str(inner.get("message") or inner["code"]), details)


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    try:
        while chunk := response.read(CHUNK):
            yield chunk
    except (http.client.IncompleteRead, ConnectionError) as error:
        raise CorruptPayload(f"the download was cut off: {type(error).__name__}") from None


def _tls_context(ca_file: Path) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidSetting(f"cannot use {ca_file} as the API's CA bundle: {exc}") from None


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
