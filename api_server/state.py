"""Typed keys of the application's and the request's state.

``app.py`` puts the opened dependencies under these keys; handlers read them
back with their types (``request.app[STORE]`` is a ``DocumentStore``), so
a handler never reaches for a global and tests can inject any
implementation of the protocols.
"""

from __future__ import annotations

from aiohttp import web

from api_server.auth import Caller, TokenRegistry
from api_server.enrollment import Enrollment
from api_server.metrics import RequestMetrics
from api_server.registry import ModelRegistry
from api_server.scheduler_client import JobScheduler
from api_server.selector_client import ClientDirectory
from api_server.settings import ApiSettings
from libs.json_values import JsonSchema
from libs.objects import ObjectStore
from libs.store import DocumentStore

SETTINGS: web.AppKey[ApiSettings] = web.AppKey("settings", ApiSettings)
TOKENS: web.AppKey[TokenRegistry] = web.AppKey("tokens", TokenRegistry)
METRICS: web.AppKey[RequestMetrics] = web.AppKey("metrics", RequestMetrics)
STORE: web.AppKey[DocumentStore] = web.AppKey("store")
OBJECTS: web.AppKey[ObjectStore] = web.AppKey("objects")
SCHEDULER: web.AppKey[JobScheduler] = web.AppKey("scheduler")
SELECTOR: web.AppKey[ClientDirectory] = web.AppKey("selector")
REGISTRY: web.AppKey[ModelRegistry] = web.AppKey("registry", ModelRegistry)
OPENAPI: web.AppKey[JsonSchema] = web.AppKey("openapi")
# Present only when the setting pki_dir names a PKI (enrolment and revocation need it).
ENROLLMENT: web.AppKey[Enrollment] = web.AppKey("enrollment", Enrollment)

CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
