"""Adapter: a small async client of the Kubernetes API, plain dicts in and out.

The Kubernetes platform and the FederatedJob mirror need a handful of calls
on namespaced objects: create, get, list, merge-patch, delete, and a Pod's
log.  They go over ``aiohttp`` straight to the API server (the same library
kopf uses), so the scheduler keeps one event loop and no thread pool, and
tests run it against KMock's emulated API over real HTTP.

Why JSON merge patches only (``application/merge-patch+json``): they mean
the same on every object, custom or built in (strategic merge does not
exist for custom resources), and they are what the emulator implements.
Callers compute patches that name the keys to remove (``null``).

Errors come back as the platform's error tree, never as HTTP details:
404 ``NotFound``, 409 ``AlreadyExists`` (or ``VersionConflict`` for a
conflicting update), 400/422 ``ValidationFailed``, 401 ``Unauthenticated``,
403 ``PermissionDenied`` (a namespace without the scheduler's RoleBinding),
and 429, 5xx, timeouts or a refused connection ``Unavailable``, which callers
treat as "try again later".  Messages carry the API server's own message,
which names objects but never holds a credential.

Credentials (:class:`KubeCredentials`) come from one of three places, tried
in order by :func:`load_credentials`: an explicit URL and token (development
and tests), the Pod's service account (in the cluster; the projected token
rotates, so it is re-read from its file), or a kubeconfig (read with the
``kubernetes`` package, imported only then).  The same credentials feed
kopf's login, so the operator and the platform act as one identity.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from libs.errors import (
    AlreadyExists,
    NotFound,
    NsflError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
    VersionConflict,
)
from libs.json_values import JsonObject
from libs.k8s.manifests import DeleteOptions

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
MAX_MESSAGE = 500


@dataclass(frozen=True)
class Resource:
    """A namespaced resource of the API: ``("", "v1", "pods")`` or ``("nsfl.io", "v1alpha1", ...)``."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        path = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
            if subresource:
                path += f"/{subresource}"
        return path


PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
CONFIGMAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")
FEDERATED_JOBS = Resource("nsfl.io", "v1alpha1", "federatedjobs")
BY_KIND = {"Pod": PODS, "Service": SERVICES, "ConfigMap": CONFIGMAPS, "Secret": SECRETS}


@dataclass(frozen=True)
class KubeCredentials:
    """How to reach and authenticate to the API server; secrets stay out of ``repr``."""

    server: str
    token: str = field(default="", repr=False)
    token_file: str = ""
    ca_file: str = ""
    ca_data: str = field(default="", repr=False)
    certificate_file: str = ""
    key_file: str = ""
    insecure: bool = False

    def current_token(self) -> str:
        """The bearer token: given, or read now from the service account's (rotating) token file."""
        if self.token_file:
            try:
                return Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                log.warning("cannot read the service account token: %s", exc.strerror)
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_file or None, cadata=self.ca_data or None)
        if self.certificate_file:
            context.load_cert_chain(self.certificate_file, self.key_file or None)
        return context


def load_credentials(
    *,
    server: str = "",
    token: str = "",
    ca_file: str = "",
    insecure: bool = False,
    kubeconfig: str = "",
    context: str = "",
) -> KubeCredentials:
    """Explicit settings, else the Pod's service account, else the kubeconfig (see the module doc)."""
    if server:
        return KubeCredentials(server=server.rstrip("/"), token=token, ca_file=ca_file, insecure=insecure)
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token_file = SERVICE_ACCOUNT_DIR / "token"
    if host and port and token_file.exists():
        host = f"[{host}]" if ":" in host else host
        return KubeCredentials(
            server=f"https://{host}:{port}",
            token_file=str(token_file),
            ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        )
    return _from_kubeconfig(kubeconfig, context)


def _from_kubeconfig(path: str, context: str) -> KubeCredentials:
    try:
        from kubernetes import client, config
    except ImportError:  # the `k8s` extra is not installed
        raise Unavailable("no Kubernetes credentials: not in a cluster and no kubeconfig reader") from None
    configuration = client.Configuration()
    load: Callable[..., None] = config.load_kube_config  # the package has no type hints
    try:
        load(
            config_file=path or None,
            context=context or None,
            client_configuration=configuration,
            persist_config=False,
        )
    except (config.ConfigException, OSError) as exc:
        raise Unavailable(f"cannot read the kubeconfig: {exc}") from None
    authorization = str(configuration.api_key.get("authorization", ""))
    return KubeCredentials(
        server=str(configuration.host).rstrip("/"),
        token=authorization.removeprefix("Bearer ").strip(),
        ca_file=configuration.ssl_ca_cert or "",
        certificate_file=configuration.cert_file or "",
        key_file=configuration.key_file or "",
        insecure=not configuration.verify_ssl,
    )


class KubeApi:
    """Namespaced create/get/list/patch/delete/log against one API server."""

    def __init__(self, credentials: KubeCredentials, *, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._token = credentials.token
        self._token_read_at = 0.0

    async def create(self, resource: Resource, namespace: str, body: Mapping[str, Any]) -> JsonObject:
        return await self._json("POST", resource.path(namespace), body=body)

    async def get(self, resource: Resource, namespace: str, name: str) -> JsonObject:
        return await self._json("GET", resource.path(namespace, name))

    async def try_get(self, resource: Resource, namespace: str, name: str) -> JsonObject | None:
        try:
            return await self.get(resource, namespace, name)
        except NotFound:
            return None

    async def list(
        self, resource: Resource, namespace: str, *, labels: Mapping[str, str] | None = None
    ) -> list[JsonObject]:
        """The objects in ``namespace`` carrying every label of ``labels``."""
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        reply = await self._json("GET", resource.path(namespace), params=params)
        items = [item for item in reply.get("items") or () if isinstance(item, dict)]
        # The selector is also checked here: it costs nothing and holds against any server.
        return [item for item in items if _has_labels(item, labels or {})]

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> JsonObject:
        """A JSON merge patch (``null`` removes a key); ``subresource="status"`` for ``.status``."""
        return await self._json(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete(
        self, resource: Resource, namespace: str, name: str, *, grace_seconds: int | None = None
    ) -> bool:
        """Delete (gracefully unless ``grace_seconds`` says otherwise); ``False`` if it was not there."""
        body: DeleteOptions = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            await self._json("DELETE", resource.path(namespace, name), body=body)
        except NotFound:
            return False
        return True

    async def log(self, namespace: str, pod: str, *, container: str, tail_lines: int) -> str:
        """The last ``tail_lines`` lines of a Pod's container log."""
        params = {"container": container, "tailLines": str(tail_lines)}
        _, text = await self._request("GET", PODS.path(namespace, pod, "log"), params=params)
        return text

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- plumbing -----------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        _, text = await self._request(
            method, path, body=body, params=params, content_type=content_type, accept="application/json"
        )
        try:
            value = json.loads(text) if text else {}
        except ValueError:
            raise Unavailable(
                f"Kubernetes API: {method} {path} answered with something that is not JSON"
            ) from None
        return value if isinstance(value, dict) else {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "*/*",
    ) -> tuple[int, str]:
        headers = {"Accept": accept}
        token = self._bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = content_type
        session = self._open()
        try:
            async with session.request(
                method,
                self.credentials.server + path,
                json=dict(body) if body is not None else None,
                params=dict(params) if params else None,
                headers=headers,
            ) as response:
                text = await response.text()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"Kubernetes API: {method} {path}: {type(exc).__name__}") from None
        if status >= 300:
            raise error_for(status, text, f"{method} {path}")
        return status, text

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, json_serialize=_dumps
            )
        return self._session

    def _bearer_token(self) -> str:
        """The token; a service account's is re-read now and then, because it rotates."""
        if self.credentials.token_file and time.monotonic() - self._token_read_at > TOKEN_REREAD_SECONDS:
            self._token = self.credentials.current_token()
            self._token_read_at = time.monotonic()
        return self._token


def error_for(status: int, text: str, what: str) -> NsflError:
    """The error of an API answer with HTTP ``status`` (its body is a ``Status`` object, usually)."""
    reason, message = "", ""
    try:
        payload = json.loads(text)
        if isinstance(payload, dict):
            reason, message = str(payload.get("reason", "")), str(payload.get("message", ""))
    except ValueError:
        pass
    detail = f"Kubernetes API: {what}: {message or reason or f'HTTP {status}'}"[:MAX_MESSAGE]
    if status == 404:
        return NotFound(detail)
    if status == 409:
        return (
            AlreadyExists(detail)
            if reason in ("AlreadyExists", "Object Already Exists")
            else VersionConflict(detail)
        )
    if status in (400, 422):
        return ValidationFailed(detail)
    if status == 401:
        return Unauthenticated(detail)
    if status == 403:
        return PermissionDenied(detail)
    return Unavailable(detail)


def _has_labels(item: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    metadata = item.get("metadata")
    present = metadata.get("labels") if isinstance(metadata, Mapping) else None
    present = present if isinstance(present, Mapping) else {}
    return all(present.get(key) == value for key, value in labels.items())


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
