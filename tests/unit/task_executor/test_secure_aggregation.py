"""The executor's secure aggregation against the coordinator's real stage driver.

The coordinator (a real :class:`RoundRunner` with :class:`SecureRounds` behind a
``grpc.aio`` server on a free loopback port) runs on an event loop in a
background thread; the executors are the synchronous code under test, called
from the test thread and from worker threads, as separate processes would.
"""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc.aio
import numpy as np
import pytest

import coordinator.secure_rounds as secure_rounds
from coordinator.aggregating import StreamingMean
from coordinator.grpc_service import CoordinatorService
from coordinator.model_state import GlobalModel
from coordinator.round_runner import RoundRunner
from coordinator.rounds import RoundBook
from coordinator.secure_encoding import SecureAggregationConfig
from coordinator.secure_rounds import SecureRounds
from coordinator.selector_client import Offer, Selection
from libs.errors import InvalidWeights, NsflError, UpdateRejected
from libs.protos import coordinator_pb2, coordinator_pb2_grpc
from libs.secagg import Mode, RoundSetup
from libs.weights.tensors import WeightMap
from task_executor import secure_aggregation
from task_executor.channels import close_all
from task_executor.runner import run_task
from task_executor.secure_aggregation import contribute, flat_delta
from task_executor.session import Outcome
from task_executor.settings import ExecutorSettings
from task_executor.task import TaskSpec, parse_task
from tests.unit.coordinator.specs import job_plan
from tests.unit.task_executor.tasks import linear_weights, read_result, task_json, write_script, write_task

# Every message travels in several pieces.  Plaintext on loopback: these tests are about the protocol, and
# run several clients' executors in one process over one kept channel, which one certificate cannot be.
SETTINGS = ExecutorSettings(chunk_bytes=64, insecure=True)
JOB = "ns/job"
# One fixed-point step of a 32-bit ring holding 2-3 clients of weight <= 2^16 and clip range 4 is
# about 3e-4 (weighted); over a total weight of 20-30 samples a mean moves by up to ~4e-5.
ATOL = 1e-4


@dataclass
class Selector:
    clients: list[str]
    offers: queue.Queue[Offer] = field(default_factory=queue.Queue)

    async def select(self, **kwargs: Any) -> Selection:
        return Selection([(c, "test") for c in self.clients], len(self.clients), kwargs["count"], True, "")

    async def offer(self, offer: Offer, *, answer_timeout: float) -> tuple[bool, str]:
        self.offers.put(offer)
        return True, ""

    async def offer_many(self, offers: list[Offer], *, answer_timeout: float) -> list[tuple[bool, str]]:
        return [await self.offer(offer, answer_timeout=answer_timeout) for offer in offers]

    async def release(self, job_id: str, client_ids: Any = ()) -> None:
        pass

    async def cancel(self, job_id: str, client_ids: Any, reason: str) -> None:
        pass


class LiveCoordinator:
    """A coordinator running one secure train round on its own event loop."""

    def __init__(self, clients: list[str], weights: WeightMap, config: SecureAggregationConfig) -> None:
        self.selector = Selector(clients)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.weights = weights
        self.secure = SecureRounds(config)
        self.endpoint = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> str:
        plan = job_plan(mode="script", clientsPerRound=len(self.selector.clients), minClients=2,
                        roundTimeoutSeconds=20, random=False)
        self.server = grpc.aio.server()
        port = self.server.add_insecure_port("127.0.0.1:0")
        endpoint = f"127.0.0.1:{port}"
        self.runner = RoundRunner(plan, self.selector, lambda: endpoint, stop_event=asyncio.Event(),  # type: ignore[arg-type]
                                  secure_aggregation=self.secure)  # fmt: skip
        self.runner.model = GlobalModel.from_weights(dict(self.weights), 2)
        runner = self.runner
        driver = SimpleNamespace(job_id=JOB, secure_aggregation=self.secure, uploads=runner.uploads)
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(driver), self.server)  # type: ignore[arg-type]
        await self.server.start()
        return endpoint

    def start_round(self) -> Future[tuple[RoundBook, StreamingMean]]:
        async def round_() -> tuple[RoundBook, StreamingMean]:
            assert self.runner.model is not None
            aggregator = StreamingMean(self.runner.model.weights)
            book = await self.runner.run_round(3, "train", attempt=0, target=len(self.selector.clients),
                                               minimum=2, aggregator=aggregator)  # fmt: skip
            return book, aggregator

        return asyncio.run_coroutine_threadsafe(round_(), self.loop)

    def offers(self) -> dict[str, Offer]:
        return {o.client_id: o for o in (self.selector.offers.get(timeout=10) for _ in self.selector.clients)}

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def live() -> Iterator[Any]:
    made: list[LiveCoordinator] = []

    def start(clients: list[str], config: SecureAggregationConfig | None = None) -> LiveCoordinator:
        made.append(LiveCoordinator(clients, linear_weights(), config or double_mask()))
        return made[-1]

    yield start
    for coordinator in made:
        coordinator.stop()
    close_all()  # the executor keeps channels per endpoint; these endpoints are gone


def double_mask(threshold: float = 2) -> SecureAggregationConfig:
    return SecureAggregationConfig(mode=Mode.DOUBLE_MASK, threshold=threshold, bits=32, stage_seconds=2.0)


def spec_for(offer: Offer, script: Path, **overrides: Any) -> dict[str, Any]:
    return task_json(script=script, endpoint=offer.endpoint, model_sha256=offer.model_sha256, task_id=offer.task_id,
                     client_id=offer.client_id, task_token=offer.token, round=offer.round, **overrides)  # fmt: skip


def trained(shift: float) -> WeightMap:
    return {name: (array + shift).astype(np.float32) for name, array in linear_weights().items()}


def contribute_in_thread(pool: ThreadPoolExecutor, spec: TaskSpec, shift: float, samples: int) -> Future[None]:
    outcome = Outcome(weights=trained(shift), num_samples=samples, metrics={"loss": 1.0})
    return pool.submit(contribute, spec, SETTINGS, outcome, linear_weights(), {"loss": 1.0})


TRAIN_SCRIPT = """
    import torch
    import nsfl

    model = torch.nn.Linear(4, 2)
    nsfl.load_weights(model)
    with torch.no_grad():
        model.weight.add_(0.5)
        model.bias.sub_(0.25)
    nsfl.commit_weights(model, num_samples=7)
    nsfl.commit_metrics({"loss": 0.5})
"""


def test_run_task_masks_its_update_and_the_coordinator_decodes_the_weighted_mean(tmp_path: Path, live: Any) -> None:
    pytest.importorskip("torch")
    coordinator = live(["c1", "c2"])
    round_ = coordinator.start_round()
    offers = coordinator.offers()
    script = write_script(tmp_path, TRAIN_SCRIPT)
    with ThreadPoolExecutor(1) as pool:
        other = contribute_in_thread(pool, parse_task(spec_for(offers["c2"], script)), shift=1.0, samples=21)
        task_dir = write_task(tmp_path / "task", spec_for(offers["c1"], script))
        code = run_task(task_dir, SETTINGS)
        other.result(20)
    book, aggregator = round_.result(20)
    assert code == 0, read_result(task_dir)
    assert read_result(task_dir)["state"] == "succeeded"
    mean = aggregator.result()
    np.testing.assert_allclose(mean["weight"], np.full((2, 4), (7 * 0.5 + 21 * 1.0) / 28), atol=ATOL)
    np.testing.assert_allclose(mean["bias"], np.full(2, (7 * -0.25 + 21 * 1.0) / 28), atol=ATOL)
    assert sorted(t.client_id for t in book.accepted) == ["c1", "c2"]
    c1 = next(t for t in book.accepted if t.client_id == "c1")
    assert c1.metrics == {"loss": 0.5} and c1.script_seconds is not None and c1.num_samples == 0
    assert coordinator.secure.record_fields()["samples"] == pytest.approx(28, abs=1e-3)


class Killed(BaseException):
    """What SIGKILL does to an executor: it stops where it is, and its stream is torn down."""


def test_an_executor_killed_after_sharing_is_unmasked_out_of_the_sum(
    tmp_path: Path, live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator = live(["c1", "c2", "c3"])
    round_ = coordinator.start_round()
    offers = coordinator.offers()
    script = write_script(tmp_path, "")
    reached: list[str] = []

    def drop_point(point: str) -> None:  # the env switch is per process; here c3 is one thread
        if threading.current_thread().name.startswith("c3"):
            reached.append(point)
            raise Killed

    monkeypatch.setattr(secure_aggregation, "_test_drop_point", drop_point)
    with ThreadPoolExecutor(2) as pool, ThreadPoolExecutor(1, thread_name_prefix="c3") as doomed:
        specs = {name: parse_task(spec_for(offers[name], script)) for name in offers}
        futures = [contribute_in_thread(pool, specs[name], shift=shift, samples=10)
                   for name, shift in (("c1", 1.0), ("c2", 2.0))]  # fmt: skip
        with pytest.raises(Killed):
            contribute_in_thread(doomed, specs["c3"], shift=3.0, samples=10).result(20)
        for future in futures:
            future.result(20)
    book, aggregator = round_.result(20)
    assert reached == ["sharing"] and sorted(t.client_id for t in book.accepted) == ["c1", "c2"]
    np.testing.assert_allclose(aggregator.result()["weight"], np.full((2, 4), 1.5), atol=ATOL)
    assert coordinator.secure.record_fields()["secureAggregation"]["dropped"] == ["c3"]


def test_the_test_only_switch_sigkills_the_executor_at_its_drop_point(monkeypatch: pytest.MonkeyPatch) -> None:
    signals: list[int] = []
    monkeypatch.setattr(secure_aggregation.os, "kill", lambda pid, sig: signals.append(sig))
    monkeypatch.setattr(secure_aggregation.logging, "shutdown", lambda: None)
    secure_aggregation._test_drop_point("sharing")
    monkeypatch.setenv(secure_aggregation.TEST_DROP_ENV, "sharing")
    secure_aggregation._test_drop_point("masking")
    assert signals == []
    secure_aggregation._test_drop_point("sharing")
    assert signals == [signal.SIGKILL]


def test_a_setup_for_another_model_is_refused_and_nothing_is_masked(
    tmp_path: Path, live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_setup = RoundSetup

    def tampered(**fields: Any) -> RoundSetup:
        return real_setup(**{**fields, "model_sha256": bytes(range(32))})

    monkeypatch.setattr(secure_rounds, "RoundSetup", tampered)
    coordinator = live(["c1", "c2"])
    round_ = coordinator.start_round()
    offers = coordinator.offers()
    script = write_script(tmp_path, "")
    with ThreadPoolExecutor(2) as pool:
        futures = [contribute_in_thread(pool, parse_task(spec_for(offers[n], script)), 1.0, 5) for n in offers]
        errors = [f.exception(20) for f in futures]
    book, _ = round_.result(20)
    assert all(isinstance(e, NsflError) and "different global model" in e.message for e in errors), errors
    assert not book.succeeded and "only 0 of 2 clients advertised keys" in book.close_reason


def test_a_client_left_out_of_the_sum_fails_its_task_with_the_reason(tmp_path: Path, live: Any) -> None:
    coordinator = live(["c1", "c2", "c3"], double_mask(threshold=3))
    round_ = coordinator.start_round()
    offers = coordinator.offers()
    script = write_script(tmp_path, "")
    with ThreadPoolExecutor(2) as pool:
        # c3 never shows up; its task is reported failed, so the round goes on with two clients
        coordinator.loop.call_soon_threadsafe(coordinator.runner.book.drop, offers["c3"].task_id, "lost")
        futures = [contribute_in_thread(pool, parse_task(spec_for(offers[n], script)), 1.0, 5) for n in ("c1", "c2")]
        errors = [f.exception(20) for f in futures]
    book, _ = round_.result(20)
    assert all(isinstance(e, UpdateRejected) and "left this update out" in e.message for e in errors), errors
    assert "threshold 3 exceeds the 2 clients" in book.close_reason


def test_flat_delta_is_trained_minus_global_in_the_canonical_order() -> None:
    layout, vector = flat_delta(trained(0.5), linear_weights())
    assert [spec.name for spec in layout.tensors] == ["bias", "weight"]
    np.testing.assert_allclose(vector, np.full(10, 0.5), atol=1e-6)
    with pytest.raises(InvalidWeights, match="cannot be aggregated"):
        flat_delta({"bias": np.zeros(2, np.float32)}, linear_weights())


def test_the_weight_is_the_capped_sample_count_or_one_under_dp(caplog: pytest.LogCaptureFixture) -> None:
    setup = RoundSetup(session_id=bytes(32), round_number=1, participants=("a", "b"), threshold=2, mode="double-mask",
                       ring_bits=32, vector_length=4, clip_range=1.0, max_weight=100.0, model_sha256=bytes(32))  # fmt: skip
    weighted = coordinator_pb2.SecAggPlan(weight_by_samples=True)
    vector = np.array([0.5, 2.0, -3.0])
    assert secure_aggregation._encoding(weighted, setup, 30, vector) == (30.0, None)
    assert secure_aggregation._encoding(weighted, setup, 500, vector)[0] == 100.0
    assert "2 of 3 delta elements exceed the clip range" in caplog.text
    dp = coordinator_pb2.SecAggPlan(dp_clip_norm=1.0, dp_noise_multiplier=1.0, dp_noise_contributors=4)
    weight, noise = secure_aggregation._encoding(dp, setup, 500, vector)
    assert weight == 1.0 and noise is not None and noise.std == pytest.approx(0.5)


def test_under_central_dp_each_client_clips_to_the_norm_and_weighs_one(tmp_path: Path, live: Any) -> None:
    config = SecureAggregationConfig(mode=Mode.DOUBLE_MASK, threshold=2, bits=32, stage_seconds=2.0,
                                     dp_clip_norm=1.0, dp_noise_multiplier=0.0)  # fmt: skip
    coordinator = live(["c1", "c2"], config)
    round_ = coordinator.start_round()
    offers = coordinator.offers()
    script = write_script(tmp_path, "")
    with ThreadPoolExecutor(2) as pool:
        # shifts of 0.5 and 2.0 on 10 parameters: both norms exceed 1, so both clip to 1/sqrt(10) each
        futures = [contribute_in_thread(pool, parse_task(spec_for(offers[n], script)), shift, samples)
                   for n, shift, samples in (("c1", 0.5, 5), ("c2", 2.0, 500))]  # fmt: skip
        for future in futures:
            future.result(20)
    book, aggregator = round_.result(20)
    np.testing.assert_allclose(aggregator.result()["weight"], np.full((2, 4), 10**-0.5), atol=1e-4)
    assert "samples" not in coordinator.secure.record_fields()  # unit weights: no sample count to report


class Doubling:
    """A stand-in for the job's client algorithm (e.g. local DP): it reshapes the delta and reports a metric."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def finish(self, delta: WeightMap) -> WeightMap:
        self.metrics["shaped"] = 1.0
        return {name: array * 2 for name, array in delta.items()}


def test_the_delta_goes_through_the_jobs_client_algorithm_before_it_is_masked(tmp_path: Path, live: Any) -> None:
    coordinator = live(["c1", "c2"])
    round_ = coordinator.start_round()
    offers = coordinator.offers()
    script = write_script(tmp_path, "")
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(contribute, parse_task(spec_for(offers[n], script)), SETTINGS,
                        Outcome(weights=trained(0.25), num_samples=10), linear_weights(), {"loss": 2.0}, Doubling())
            for n in ("c1", "c2")
        ]  # fmt: skip
        for future in futures:
            future.result(20)
    book, aggregator = round_.result(20)
    np.testing.assert_allclose(aggregator.result()["bias"], np.full(2, 0.5), atol=ATOL)
    assert all(t.metrics == {"loss": 2.0, "shaped": 1.0} for t in book.accepted)
