"""A small fake of the nsfl REST API for the CLI tests: real HTTP on 127.0.0.1, state in memory.

It speaks the API's shapes (``{"jobs": [...], "nextPageToken"}``, the error
body ``{"error": {code, message, details}}``, streamed model uploads and
downloads with ``X-Nsfl-Sha256``), checks the bearer token, and records
every request so a test can assert that nothing was sent.  A job can be
given a script of states; each GET of that job advances it one round, so
``get job -w`` sees a job progress and finish without any sleeping.

It runs an aiohttp app on its own event loop in a thread, because the CLI
under test is synchronous and runs in the test's thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "fake-token-0123456789abcdef"
JOB = "/api/v1/namespaces/{ns}/jobs/{name:[^/:]+}"
MODEL = "/api/v1/namespaces/{ns}/models/{model}"


def error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "details": details}}, status=status)


@dataclass
class FakeApi:
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    models: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    blobs: dict[tuple[str, str, int], bytes] = field(default_factory=dict)
    clients: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    progressing: set[tuple[str, str]] = field(default_factory=set)
    final_state: str = "FINISHED"
    ready: bool = True
    url: str = ""
    public_paths: tuple[str, ...] = ("/healthz", "/readyz")

    # --- helpers for tests -----------------------------------------------------------------

    def add_job(
        self, name: str, state: str = "QUEUED", namespace: str = "default", rounds: int = 5
    ) -> dict[str, Any]:
        job = {
            "namespace": namespace, "name": name, "state": state, "reason": "submitted",
            "createdAt": time.time() - 90, "spec": {"name": name, "runtime": "pytorch", "rounds": rounds},
            "status": {"round": 0, "rounds": rounds, "progress": 0.0, "participants": [], "lastMetrics": {},
                       "checkpoints": [], "finalModel": None},
            "version": 1,
        }  # fmt: skip
        self.jobs[(namespace, name)] = job
        return job

    def sent(self, method: str) -> list[str]:
        return [path for m, path in self.requests if m == method]

    # --- the app ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_authenticate])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/api/v1/namespaces", self._namespaces)
        app.router.add_get("/api/v1/clients", self._clients)
        app.router.add_post("/api/v1/namespaces/{ns}/jobs", self._create_job)
        app.router.add_get("/api/v1/namespaces/{ns}/jobs", self._list_jobs)
        app.router.add_get(JOB, self._get_job)
        app.router.add_delete(JOB, self._delete_job)
        app.router.add_post(JOB + ":start", self._start_job)
        app.router.add_post(JOB + ":stop", self._stop_job)
        app.router.add_get(JOB + "/metrics", self._metrics)
        app.router.add_get(JOB + "/logs", self._logs)
        app.router.add_post("/api/v1/namespaces/{ns}/models", self._create_model)
        app.router.add_get("/api/v1/namespaces/{ns}/models", self._list_models)
        app.router.add_get(MODEL, self._get_model)
        app.router.add_delete(MODEL, self._delete_model)
        app.router.add_put(MODEL + "/versions", self._upload)
        app.router.add_get(MODEL + "/versions/{version}/download", self._download)
        app.router.add_delete(MODEL + "/versions/{version}", self._delete_version)
        return app  # fmt: skip

    @web.middleware
    async def _record_and_authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        public = request.path in self.public_paths
        if not public and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return error(401, "Unauthenticated", "the bearer token is not valid")
        response: web.StreamResponse = await handler(request)
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _namespaces(self, request: web.Request) -> web.Response:
        return web.json_response({"namespaces": ["default"], "allNamespaces": True})

    async def _clients(self, request: web.Request) -> web.Response:
        return web.json_response({"clients": self.clients})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"status": "ready", "checks": {"store": "ok", "scheduler": "ok"}})
        return error(
            503,
            "Unavailable",
            "not ready: scheduler unavailable",
            checks={"store": "ok", "scheduler": "unavailable"},
        )

    def _job(self, request: web.Request) -> dict[str, Any] | None:
        return self.jobs.get((request.match_info["ns"], request.match_info["name"]))

    def _missing_job(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return error(404, "NotFound", f"job {name!r} not found in namespace {request.match_info['ns']!r}")

    async def _create_job(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.bodies.append(spec)
        namespace = request.match_info["ns"]
        if (namespace, spec["name"]) in self.jobs:
            return error(409, "AlreadyExists", f"job {spec['name']!r} already exists")
        job = self.add_job(spec["name"], namespace=namespace, rounds=int(spec.get("rounds", 5)))
        return web.json_response(job, status=201)

    async def _list_jobs(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        states = [s for s in request.query.get("state", "").split(",") if s]
        names = sorted(
            n for (ns, n), j in self.jobs.items() if ns == namespace and (not states or j["state"] in states)
        )
        after = request.query.get("pageToken")
        if after:
            names = [n for n in names if n > after]
        limit = int(request.query.get("limit", 50))
        page = names[:limit]
        token = page[-1] if len(names) > limit else None
        return web.json_response({"jobs": [self.jobs[(namespace, n)] for n in page], "nextPageToken": token})

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return self._missing_job(request)
        if (job["namespace"], job["name"]) in self.progressing and job["state"] not in (
            "FINISHED",
            "FAILED",
            "STOPPED",
        ):
            status = job["status"]
            status["round"] += 1
            status["lastMetrics"] = {"accuracy": 0.5 + 0.09 * status["round"], "loss": 1.0 / status["round"]}
            job["state"] = "RUNNING"
            if status["round"] >= status["rounds"]:
                job["state"], job["reason"] = self.final_state, "coordinator said so"
        return web.json_response(job)

    async def _delete_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return self._missing_job(request)
        if job["state"] == "RUNNING":
            return error(
                409, "InvalidState", f"cannot delete job {job['name']!r} while RUNNING; stop it first"
            )
        job["state"] = "DELETING"
        del self.jobs[(job["namespace"], job["name"])]
        return web.json_response(job)

    async def _start_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return self._missing_job(request)
        self.bodies.append(await request.json())
        job["state"] = "QUEUED"
        return web.json_response(job)

    async def _stop_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return self._missing_job(request)
        job["state"] = "STOPPING"
        return web.json_response(job)

    async def _metrics(self, request: web.Request) -> web.Response:
        rounds = [{"round": r, "accepted": ["c0", "c1"], "samples": 700, "trainMetrics": {"loss": 1.0 / r},
                   "evaluation": {"accuracy": 0.8 + r / 100, "loss": 0.5 / r}} for r in (1, 2, 3)]  # fmt: skip
        return web.json_response({"job": request.match_info["name"], "rounds": rounds})

    async def _logs(self, request: web.Request) -> web.Response:
        if self._job(request) is None:
            return self._missing_job(request)
        lines = [f"round {i} closed" for i in range(1, 11)]
        tail = int(request.query.get("tail", 0)) or len(lines)
        return web.Response(text="\n".join(lines[-tail:]) + "\n", content_type="text/plain")

    async def _create_model(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = (request.match_info["ns"], body["name"])
        if key in self.models:
            return error(409, "AlreadyExists", f"model {body['name']!r} already exists")
        self.models[key] = {"namespace": key[0], "name": body["name"], "runtime": body["runtime"],
                            "description": body.get("description", ""), "latest": None, "versions": []}  # fmt: skip
        return web.json_response(self.models[key], status=201)

    async def _list_models(self, request: web.Request) -> web.Response:
        models = [m for (ns, _), m in sorted(self.models.items()) if ns == request.match_info["ns"]]
        return web.json_response({"models": models, "nextPageToken": None})

    def _model(self, request: web.Request) -> dict[str, Any] | None:
        return self.models.get((request.match_info["ns"], request.match_info["model"]))

    async def _get_model(self, request: web.Request) -> web.Response:
        model = self._model(request)
        if model is None:
            return error(404, "NotFound", f"model {request.match_info['model']!r} not found")
        return web.json_response(model)

    async def _delete_model(self, request: web.Request) -> web.Response:
        if self.models.pop((request.match_info["ns"], request.match_info["model"]), None) is None:
            return error(404, "NotFound", f"model {request.match_info['model']!r} not found")
        return web.Response(status=204)

    async def _upload(self, request: web.Request) -> web.Response:
        model = self._model(request)
        if model is None:
            return error(404, "NotFound", f"model {request.match_info['model']!r} not found")
        data = bytearray()
        async for chunk in request.content.iter_chunked(65536):
            data += chunk
        sha256 = hashlib.sha256(data).hexdigest()
        if request.query.get("sha256") not in (None, sha256):
            return error(400, "ChecksumMismatch", "the upload does not match its sha256")
        number = len(model["versions"]) + 1
        version = {"version": number, "sha256": sha256, "size": len(data), "createdAt": time.time(),
                   "description": request.query.get("description", ""), "lineage": None}  # fmt: skip
        model["versions"].append(version)
        model["latest"] = number
        self.blobs[(model["namespace"], model["name"], number)] = bytes(data)
        return web.json_response(version, status=201)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        model = self._model(request)
        number = int(request.match_info["version"])
        blob = self.blobs.get((request.match_info["ns"], request.match_info["model"], number))
        if model is None or blob is None:
            return error(404, "NotFound", f"model {request.match_info['model']!r} has no version {number}")
        headers = {
            "X-Nsfl-Sha256": hashlib.sha256(blob).hexdigest(),
            "Content-Type": "application/octet-stream",
        }
        return web.Response(body=blob, headers=headers)

    async def _delete_version(self, request: web.Request) -> web.Response:
        model = self._model(request)
        number = int(request.match_info["version"])
        if model is None or not any(v["version"] == number for v in model["versions"]):
            return error(404, "NotFound", f"model {request.match_info['model']!r} has no version {number}")
        model["versions"] = [v for v in model["versions"] if v["version"] != number]
        return web.Response(status=204)


class ServerThread:
    """Runs a :class:`FakeApi` on 127.0.0.1, a free port, in a background thread."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.runner = web.AppRunner(api.app(), access_log=None)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> str:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        port = future.result(timeout=10)
        self.api.url = f"http://127.0.0.1:{port}"
        return self.api.url

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
