"""Who may call a coordinator, over a real in-process server with mutual TLS.

The server is built as ``coordinator.app`` builds it (its :class:`~libs.wire.Wire`
as the coordinator of ``ns/job``, the guard, :class:`CoordinatorService` over a
real :class:`RoundRunner`); the tests play the clients ``alice`` and ``bob``,
each offered a task of round 1, and the control plane.  A task token is a
bearer secret: here ``bob`` has stolen ``alice``'s, and every use of it is
refused with ``PERMISSION_DENIED`` while ``alice``'s own task goes on untouched.
Then: ``Stop`` and ``GetStatus`` are the control plane's, and a coordinator
refuses to start with a certificate for another job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest

from coordinator.__main__ import main
from coordinator.aggregating import StreamingMean
from coordinator.app import open_wire, run
from coordinator.grpc_service import CoordinatorService
from coordinator.model_state import GlobalModel
from coordinator.round_runner import RoundRunner
from coordinator.rounds import RoundBook
from coordinator.selector_client import Offer, Selection
from coordinator.settings import CoordinatorSettings
from coordinator.stopping import StopRequested
from libs.errors import InvalidSetting
from libs.protos import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from libs.settings import load_settings
from libs.weights.tensors import encode, sha256_hex
from tests.fixtures.pki import TestPki
from tests.unit.coordinator.specs import job_plan

JOB = "ns/job"
WEIGHTS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
DELTAS = {"alice": np.full((2, 3), 1.0, np.float32), "bob": np.full((2, 3), 3.0, np.float32)}
Rpc = Callable[[coordinator_pb2_grpc.CoordinatorStub], Awaitable[Any]]  # one call, made by a test client
PLAN = job_plan(mode="function", clientsPerRound=2, minClients=2, roundTimeoutSeconds=20, random=False)


@dataclass
class Selector:
    """Selects alice and bob and keeps their offers: the tests are the clients."""

    offers: dict[str, Offer] = field(default_factory=dict)
    offered: asyncio.Event = field(default_factory=asyncio.Event)

    async def select(self, **kwargs: Any) -> Selection:
        return Selection([("alice", "test"), ("bob", "test")], 2, kwargs["count"], True, "")

    async def offer_many(self, offers: list[Offer], *, answer_timeout: float) -> list[tuple[bool, str]]:
        self.offers.update((offer.client_id, offer) for offer in offers)
        self.offered.set()
        return [(True, "accepted")] * len(offers)

    async def release(self, job_id: str, client_ids: Any = ()) -> None:
        pass

    async def cancel(self, job_id: str, client_ids: Any, reason: str) -> None:
        pass


class Driver:
    """What the servicer asks of the coordinator's Driver (its ``ServedJob``), over the real round runner."""

    job_id = JOB

    def __init__(self, runner: RoundRunner) -> None:
        self.runner = runner
        self.uploads = runner.uploads
        self.secure_aggregation = runner.secure_aggregation
        self.stops: list[str] = []

    def request_stop(self, reason: str) -> None:
        self.stops.append(reason)
        self.runner.stop_event.set()

    def status_message(self) -> coordinator_pb2.CoordinatorStatus:
        return coordinator_pb2.CoordinatorStatus(job_id=JOB, state="RUNNING", round=1, rounds=3)


@dataclass
class Coordinator:
    pki: TestPki
    port: int
    runner: RoundRunner
    driver: Driver
    offers: dict[str, Offer]
    round: asyncio.Task[RoundBook]

    def stub(self, *who: str) -> tuple[grpc.aio.Channel, coordinator_pb2_grpc.CoordinatorStub]:
        wire = self.pki.wire(self.pki.identity(*who))
        channel = wire.channel(f"127.0.0.1:{self.port}", wire.coordinator_of(JOB))
        return channel, coordinator_pb2_grpc.CoordinatorStub(channel)

    async def call(self, who: tuple[str, ...], rpc: Rpc) -> Any:
        channel, stub = self.stub(*who)
        async with channel:
            return await rpc(stub)

    async def refused(self, who: tuple[str, ...], rpc: Rpc) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call(who, rpc)
        return caught.value


@pytest.fixture
async def coordinator(test_pki: TestPki) -> AsyncIterator[Coordinator]:
    wire = test_pki.wire(test_pki.identity("coordinator", "ns", "job"))
    server = wire.server()
    port = wire.add_port(server, "127.0.0.1:0")
    selector = Selector()
    runner = RoundRunner(PLAN, selector, lambda: f"127.0.0.1:{port}", stop_event=asyncio.Event())  # type: ignore[arg-type]
    runner.model = GlobalModel.from_weights(dict(WEIGHTS), 0)
    driver = Driver(runner)
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(driver), server)
    await server.start()
    aggregator = StreamingMean(runner.model.weights)
    round_ = asyncio.create_task(
        runner.run_round(1, "train", attempt=0, target=2, minimum=2, aggregator=aggregator))
    try:
        await asyncio.wait_for(selector.offered.wait(), 10)
        yield Coordinator(test_pki, port, runner, driver, selector.offers, round_)
    finally:
        round_.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopRequested):
            await round_
        await server.stop(None)


def header(task: Offer, *, client_id: str | None = None, payload: bytes = b"") -> coordinator_pb2.UpdateHeader:
    return coordinator_pb2.UpdateHeader(
        job_id=JOB, round=1, client_id=task.client_id if client_id is None else client_id, attempt=0,
        task_id=task.task_id, task_token=task.token, kind="train", num_samples=10, base_sha256=task.model_sha256,
        blob=common_pb2.BlobHeader(sha256=sha256_hex(payload), total_size=len(payload)))  # fmt: skip


def submission(task: Offer, client_id: str | None = None) -> coordinator_pb2.UpdateSubmission:
    """The update of ``task``'s client, or of ``client_id`` sent under ``task``'s ticket."""
    payload = encode({"w": DELTAS[client_id or task.client_id]})
    return coordinator_pb2.UpdateSubmission(header=header(task, client_id=client_id, payload=payload),
                                            payload=payload)


def submit(task: Offer) -> Rpc:
    return lambda stub: stub.SubmitUpdate(submission(task), timeout=5)


async def test_a_client_not_holding_the_task_cannot_download_its_model_with_the_stolen_token(
    coordinator: Coordinator,
) -> None:
    alices = coordinator.offers["alice"]
    request = coordinator_pb2.DownloadRequest(job_id=JOB, round=1, sha256=alices.model_sha256,
                                              task_token=alices.token)

    async def download(stub: coordinator_pb2_grpc.CoordinatorStub) -> bytes:
        frames = [frame async for frame in stub.DownloadModel(request, timeout=5)]
        return b"".join(frame.chunk.data for frame in frames if frame.HasField("chunk"))

    refusal = await coordinator.refused(("client", "bob"), download)
    assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not hold this task" in (refusal.details() or "")
    assert coordinator.runner.model is not None
    assert await coordinator.call(("client", "alice"), download) == bytes(coordinator.runner.model.payload)


async def test_every_use_of_a_stolen_token_is_denied_and_its_clients_task_goes_on_untouched(
    coordinator: Coordinator,
) -> None:
    alices, bobs = coordinator.offers["alice"], coordinator.offers["bob"]
    bob = ("client", "bob")
    frames = [coordinator_pb2.UploadFrame(header=submission(alices).header),
              coordinator_pb2.UploadFrame(chunk=common_pb2.BlobChunk(offset=0, data=submission(alices).payload))]
    attempts: dict[str, Rpc] = {
        "submit as alice": lambda s: s.SubmitUpdate(submission(alices), timeout=5),
        "submit as bob under alice's ticket": lambda s: s.SubmitUpdate(submission(alices, "bob"), timeout=5),
        "stream as alice": lambda s: s.UploadUpdate(iter(frames), timeout=5),
        "report alice's task failed": lambda s: s.ReportTaskStatus(common_pb2.TaskStatus(
            task_id=alices.task_id, task_token=alices.token, client_id="alice", state=common_pb2.TASK_FAILED,
            reason="forged"), timeout=5),
        "ask alice's plan": lambda s: s.GetTaskPlan(coordinator_pb2.TaskPlanRequest(
            job_id=JOB, round=1, task_id=alices.task_id, task_token=alices.token), timeout=5),
        "ask alice's upload offset": lambda s: s.GetUploadOffset(coordinator_pb2.UploadOffsetRequest(
            task_id=alices.task_id, task_token=alices.token), timeout=5),
        "await alice's model": lambda s: s.AwaitModel(coordinator_pb2.AwaitModelRequest(
            job_id=JOB, task_id=alices.task_id, task_token=alices.token, round=1), timeout=5),
        "submit bob's own under alice's name": lambda s: s.SubmitUpdate(
            coordinator_pb2.UpdateSubmission(header=header(bobs, client_id="alice")), timeout=5),
    }  # fmt: skip
    for what, attempt in attempts.items():
        refusal = await coordinator.refused(bob, attempt)
        assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED, what

    book = coordinator.runner.book
    assert book is not None and book.rejections == [] and not book.accepted, "nothing reached a task"
    for task in (alices, bobs):
        result = await coordinator.call(("client", task.client_id), submit(task))
        assert (result.accepted, result.reason) == (True, "accepted"), task.client_id
    done = await asyncio.wait_for(coordinator.round, 10)
    assert done.succeeded and sorted(t.client_id for t in done.accepted) == ["alice", "bob"]
    assert done.rejections == [] and done.summary()["dropped"] == {}


@pytest.mark.parametrize("who", [("scheduler",), ("coordinator", "ns", "job")], ids=["scheduler", "itself"])
async def test_the_scheduler_or_the_coordinator_itself_stops_the_job(
    coordinator: Coordinator, who: tuple[str, ...],
) -> None:
    reply = await coordinator.call(who, lambda s: s.Stop(coordinator_pb2.StopRequest(reason="user asked"), timeout=5))
    assert reply.ok and coordinator.driver.stops == ["user asked"]
    with pytest.raises(StopRequested):
        await asyncio.wait_for(coordinator.round, 10)


@pytest.mark.parametrize(
    "who", [("client", "alice"), ("api-server",), ("selector",), ("coordinator", "ns", "other")],
    ids=["a client", "the api server", "the selector", "another job's coordinator"],
)
async def test_no_one_else_can_stop_the_job(coordinator: Coordinator, who: tuple[str, ...]) -> None:
    refusal = await coordinator.refused(who, lambda s: s.Stop(coordinator_pb2.StopRequest(reason="x"), timeout=5))
    assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED
    assert coordinator.driver.stops == [] and not coordinator.round.done()


async def test_the_status_answers_the_control_plane_and_not_a_client(coordinator: Coordinator) -> None:
    async def status(stub: coordinator_pb2_grpc.CoordinatorStub) -> Any:
        return await stub.GetStatus(coordinator_pb2.StatusRequest(), timeout=5)

    answer = await coordinator.call(("api-server",), status)
    assert (answer.job_id, answer.state) == (JOB, "RUNNING")
    refusal = await coordinator.refused(("client", "alice"), status)
    assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED


# --- starting -------------------------------------------------------------------------------------


def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"name": "job", "namespace": "ns", "runtime": "pytorch", "taskEntry": "train",
                                "datasets": ["digits"], "rounds": 1, "clientsPerRound": 2}))
    return path


def stores(tmp_path: Path) -> dict[str, Any]:
    return {"document_store": f"sqlite:///{tmp_path / 'nsfl.db'}", "object_store": f"file://{tmp_path / 'objects'}"}


async def test_a_coordinator_whose_certificate_names_another_job_refuses_to_start(
    test_pki: TestPki, tmp_path: Path,
) -> None:
    wrong = test_pki.settings(test_pki.identity("coordinator", "ns", "other"))
    settings = CoordinatorSettings(job=job_file(tmp_path), workdir=tmp_path / "work", **stores(tmp_path), **wrong)
    with pytest.raises(InvalidSetting) as caught:
        await run(settings)
    message = caught.value.message
    assert "spiffe://nsfl.local/coordinator/ns/other" in message and "runs job ns/job" in message
    assert not (tmp_path / "nsfl.db").exists(), "refused before any store was opened"


def test_the_schedulers_variables_give_the_coordinator_its_jobs_identity(test_pki: TestPki, tmp_path: Path) -> None:
    env = {**test_pki.env("NSFL_COORDINATOR_", test_pki.identity("coordinator", "ns", "job")),
           **{f"NSFL_COORDINATOR_{key.upper()}": value for key, value in stores(tmp_path).items()},
           "NSFL_COORDINATOR_LISTEN": "0.0.0.0:0"}  # fmt: skip
    settings = load_settings(CoordinatorSettings, prefix="NSFL_COORDINATOR_", env=env)
    assert settings.tls_crl == test_pki.directory.crl and not settings.insecure
    wire = open_wire(settings, JOB)
    assert wire.secure and wire.identity == test_pki.identity("coordinator", "ns", "job")


def test_the_command_line_says_what_is_wrong_with_another_jobs_certificate(
    test_pki: TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in test_pki.env("NSFL_COORDINATOR_", test_pki.identity("coordinator", "ns", "other")).items():
        monkeypatch.setenv(key, value)
    for key, value in stores(tmp_path).items():
        monkeypatch.setenv(f"NSFL_COORDINATOR_{key.upper()}", value)
    assert run_main(["--job", str(job_file(tmp_path)), "--workdir", str(tmp_path / "work")]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("Error: setting 'tls_cert'") and "the coordinator of job ns/other" in error


def run_main(argv: list[str]) -> int:
    """``python -m coordinator`` in this process, its logging context kept from the tests after it."""
    return contextvars.copy_context().run(main, argv)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], "mutual TLS is required"),
        (["--insecure", "--listen", "0.0.0.0:0"], "allows plaintext only on loopback"),
        ("client", "runs as a coordinator"),
    ],
    ids=["no certificate", "plaintext off loopback", "a client's certificate"],
)
def test_a_coordinator_without_its_certificate_refuses_to_start(
    test_pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: Any, expected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("NSFL_COORDINATOR_")]:
        monkeypatch.delenv(key)
    if flags == "client":
        files = test_pki.settings(test_pki.identity("client", "alice"))
        flags = [f"--{key.replace('_', '-')}={value}" for key, value in files.items()]
    argv = ["--job", str(job_file(tmp_path)), "--workdir", str(tmp_path / "work"),
            *(f"--{key.replace('_', '-')}={value}" for key, value in stores(tmp_path).items()), *flags]
    assert run_main(argv) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("Error: ") and expected in error
