"""A FederatedJob trained for real: the Kubernetes API emulated, everything else real processes on loopback.

The scheduler runs in this process in Kubernetes mode (kopf operator,
mirror, Kubernetes platform) against KMock's emulated API over HTTP, with
its store in MongoDB (nx-27017, the MongoDB wire protocol) and its objects
in S3 (moto's server).  A real selector and three real task managers run as
processes.  The test applies a ``FederatedJob`` as ``kubectl`` would; the
scheduler creates the coordinator's Pod in the emulator, and the test does
what the kubelet would (:class:`ProcessKubelet`): resolve the Pod's
environment from its Secrets and ConfigMap exactly as written, mount its
volumes, and start its command as a process.  The coordinator then reaches
the store and the bucket with the credentials of the namespace's Secrets,
reports to the scheduler with the token of its own Secret, and the task
managers' executors train with it until the job is FINISHED.

Two liberties, both for the loopback: a Pod's volumes become directories of
the test, and its port (every coordinator listens on 50053 in its own
network namespace) becomes a free port of the host, which the coordinator
advertises (``coordinator_advertise_host_template: 127.0.0.1``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from job_scheduler.app import SchedulerApp
from job_scheduler.k8s_api import CONFIGMAPS, FEDERATED_JOBS, PODS, SECRETS, KubeApi
from job_scheduler.settings import SchedulerSettings
from libs.objects import open_object_store
from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import ROOT, Cluster
from tests.fixtures.s3 import S3Endpoint
from tests.unit.job_scheduler.test_k8s_emulator import ApiServer, Kubelet, connected, live_objects

pytestmark = [pytest.mark.slow, pytest.mark.kmock(cls=ApiServer)]

NS = "default"
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class ProcessKubelet:
    """Starts each coordinator Pod of the emulator as a process, and writes back what happens to it."""

    def __init__(self, api: KubeApi, base: Path) -> None:
        self.api, self.status, self.base = api, Kubelet(api), base
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.exits: dict[str, int] = {}
        self.exited = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        while True:
            for pod in live_objects_of(await self.api.list(PODS, NS)):
                name = pod["metadata"]["name"]
                if name not in self.processes and "nsfl.io/job" in pod["metadata"].get("labels", {}):
                    await self._start(pod)
                elif name in self.processes and pod["metadata"].get("deletionTimestamp"):
                    process = self.processes[name]
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)  # graceful deletion: the coordinator stops
            await asyncio.sleep(0.2)

    async def _start(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        root = self.base / name
        container = pod["spec"]["containers"][0]
        mounts = await self._mount(pod, container, root)
        env = await self._environment(container, mounts)
        command = [sys.executable if container["command"][0] == "python" else container["command"][0],
                   *container["command"][1:]]  # fmt: skip
        base_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(root),
                    "PYTHONUNBUFFERED": "1"}  # fmt: skip
        log_fd = os.open(root / "container.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.processes[name] = await asyncio.create_subprocess_exec(
                *command, cwd=ROOT, env={**base_env, **env}, stdout=log_fd, stderr=log_fd,
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            os.close(log_fd)
        await self.status.running(NS, name)
        self._tasks.append(asyncio.create_task(self._wait(name, root)))

    async def _mount(self, pod: dict[str, Any], container: dict[str, Any], root: Path) -> dict[str, Path]:
        """Each volume as a directory: a ConfigMap's items written out, an emptyDir empty."""
        volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
        mounts: dict[str, Path] = {}
        for mount in container["volumeMounts"]:
            volume, path = volumes[mount["name"]], root / "volumes" / mount["name"]
            path.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                source = volume["configMap"]
                try:
                    data = (await self.api.get(CONFIGMAPS, NS, source["name"]))["data"]
                except Exception:
                    if source.get("optional"):
                        continue  # an optional ConfigMap that does not exist mounts nothing
                    raise
                for item in source.get("items") or [{"key": k, "path": k} for k in data]:
                    (path / item["path"]).write_text(data[item["key"]])
            elif "secret" in volume:
                data = (await self.api.get(SECRETS, NS, volume["secret"]["secretName"]))["data"]
                for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                    target = path / item["path"]
                    target.write_bytes(base64.b64decode(data[item["key"]]))
                    target.chmod(0o400)
            mounts[mount["mountPath"]] = path
        return mounts

    async def _environment(self, container: dict[str, Any], mounts: dict[str, Path]) -> dict[str, str]:
        """The container's variables as Kubernetes resolves them: Secrets read, ``$(VAR)`` expanded."""
        env: dict[str, str] = {}
        for variable in container["env"]:
            if "valueFrom" in variable:
                reference = variable["valueFrom"]["secretKeyRef"]
                secret = await self.api.get(SECRETS, NS, reference["name"])
                value = base64.b64decode(secret["data"][reference["key"]]).decode()
            else:
                value = _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), variable["value"])
            for mount_path in sorted(mounts, key=len, reverse=True):  # the deepest mount holds the path
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    value = str(mounts[mount_path]) + value[len(mount_path) :]
                    break
            env[variable["name"]] = value
        env["NSFL_COORDINATOR_LISTEN"] = f"127.0.0.1:{_free_port()}"  # the Pod's own network namespace
        return env

    async def _wait(self, name: str, root: Path) -> None:
        code = await self.processes[name].wait()
        self.exits[name] = code
        self.exited.set()
        tail = (root / "container.log").read_text(errors="replace").splitlines()[-15:]
        await self.status.terminated(NS, name, code, message="\n".join(tail) if code else "")

    async def close(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def live_objects_of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: item["metadata"]["name"])


@pytest.fixture
async def api(kmock: ApiServer) -> AsyncIterator[KubeApi]:
    async with connected(kmock) as client:
        yield client


async def test_a_federatedjob_trains_with_its_coordinator_pod_on_mongodb_and_s3_to_finished(
    kmock: ApiServer, api: KubeApi, cluster: Cluster, digits_shares: Any, mongo_url: str,
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    selector = cluster.start_selector()
    for index, share in enumerate(digits_shares.values()):
        name = f"client-{index}"
        cluster.start_task_manager(name, client_config(name, share, selector, cluster.base / name))
    # The namespace's Secrets (deploy/kubernetes/job-namespace): where the store and the bucket are.
    await api.create(SECRETS, NS, {"apiVersion": "v1", "kind": "Secret",
                                   "metadata": {"name": "nsfl-mongodb", "namespace": NS},
                                   "data": {"uri": _b64(mongo_url)}})  # fmt: skip
    await api.create(SECRETS, NS, {"apiVersion": "v1", "kind": "Secret",
                                   "metadata": {"name": "nsfl-s3", "namespace": NS},
                                   "data": {"endpoint": _b64(s3_server.url), "bucket": _b64(s3_bucket),
                                            "access-key": _b64(s3_server.access_key),
                                            "secret-key": _b64(s3_server.secret_key)}})  # fmt: skip
    # The scheduler's own credentials come from the same Secrets, as in deploy/kubernetes/base.
    monkeypatch.setenv("NSFL_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("NSFL_S3_SECRET_KEY", s3_server.secret_key)
    settings = SchedulerSettings(
        listen="127.0.0.1:0", state_dir=tmp_path / "state", platform="kubernetes", selector=selector,
        store_url=mongo_url, object_store_url=f"s3://{s3_bucket}?endpoint={s3_server.url}",
        coordinator_image="nsfl/coordinator:test", coordinator_advertise_host_template="127.0.0.1",
        kube_api_url=str(kmock.url), kube_api_token="test",
        admission_interval_seconds=0.2, watch_interval_seconds=0.2,
        coordinator_issuer_cert=cluster.pki.directory.issuer, coordinator_issuer_key=cluster.pki.directory.issuer_key,
        **cluster.pki.settings(cluster.pki.identity("scheduler")),
    )  # fmt: skip
    kubelet = ProcessKubelet(api, tmp_path / "kubelet")
    kubelet_task = asyncio.create_task(kubelet.run())
    app = SchedulerApp(settings)
    await app.start()
    try:
        job = digits_job("digits", rounds=3)
        spec = {k: v for k, v in job.items() if k not in ("name", "namespace")}
        await api.create(
            FEDERATED_JOBS,
            NS,
            {
                "apiVersion": "nsfl.io/v1alpha1",
                "kind": "FederatedJob",
                "metadata": {"name": "digits", "namespace": NS},
                "spec": spec,
            },
        )
        status = await _until_ended(api, kubelet, cluster, within=300)
        assert status["state"] == "FINISHED", f"{status}\n{cluster.logs()}\n{_logs(tmp_path)}"
        assert status["roundText"] == "3/3" and status["progress"] == "100%"
        assert status["lastMetrics"]["accuracy"] >= 0.8, status["lastMetrics"]
        assert len(status["participants"]) >= 2
        await asyncio.wait_for(kubelet.exited.wait(), 30)  # the coordinator reports FINISHED, then exits
        assert kubelet.exits == {"nsfl-coord-digits-r1": 0}, "one coordinator Pod, which finished"
        stored = (await app.service.get(NS, "digits")).data if app.service else {}
        assert stored["state"] == "FINISHED" and stored["resourceUid"]
        objects = open_object_store(f"s3://{s3_bucket}?endpoint={s3_server.url}")
        try:
            final = await objects.stat(status["finalModel"]["key"])
            assert final.sha256 == status["finalModel"]["sha256"] and final.size > 0
        finally:
            await objects.close()
        pod = (await api.list(PODS, NS))[0]
        for variable in pod["spec"]["containers"][0]["env"]:
            assert mongo_url not in str(variable) and s3_server.secret_key not in str(variable)
        assert len(live_objects(kmock, "services", NS)) == 1
    finally:
        kubelet_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await kubelet_task
        await kubelet.close()
        await app.stop()


async def _until_ended(
    api: KubeApi, kubelet: ProcessKubelet, cluster: Cluster, within: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    status: dict[str, Any] = {}
    while loop.time() < deadline:
        status = ((await api.try_get(FEDERATED_JOBS, NS, "digits")) or {}).get("status") or {}
        if status.get("state") in ("FINISHED", "FAILED", "STOPPED"):
            return status
        await asyncio.sleep(0.5)
    raise AssertionError(f"the job did not end within {within:.0f}s: {status}\n{cluster.logs()}")


def _logs(base: Path) -> str:
    return "\n".join(f"--- {log}:\n{log.read_text(errors='replace')[-3000:]}"
                     for log in (base / "kubelet").glob("*/container.log"))  # fmt: skip
