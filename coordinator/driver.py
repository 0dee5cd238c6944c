"""The job-level loop of a coordinator: prepare, rounds, evaluation, checkpoints, finish.

One :class:`Driver` per coordinator process.  It resumes from the job's
latest checkpoint when there is one (so a restarted coordinator continues at
the next round and the job still runs exactly ``rounds`` rounds), otherwise
starts from the job's initial model source, or asks one client to initialise
the model from the training script (task kind ``init``).

Failure policy: a round that ends with fewer than ``minClients`` accepted
updates, or whose attempt fails otherwise (an extender hook raised, a robust
rule was left with too few updates: :class:`~coordinator.errors.RoundFailed`),
is run again (a new attempt) up to ``maxRetries`` times, then the job FAILS
with the round's reason.  The job's algorithm (:mod:`coordinator.algorithms`)
publishes each train round's model, aggregates and steps; a privacy budget
(``targetEpsilon``) may finish the job before its last round.  A stop request abandons the round in
progress at once, saves a checkpoint of the last completed round, and ends
the job STOPPED.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from coordinator.aggregating import UpdateSink
from coordinator.algorithms import JobAlgorithm
from coordinator.checkpoint_writer import CheckpointWriter
from coordinator.checkpoints import CheckpointStore
from coordinator.errors import RoundFailed
from coordinator.model_state import GlobalModel
from coordinator.offload import run_sized
from coordinator.piggyback import EvaluationPiggyback
from coordinator.progress import ProgressReporter
from coordinator.round_runner import RoundRunner
from coordinator.rounds import weighted_metrics
from coordinator.secure_rounds import SecureRounds
from coordinator.stopping import StopRequested
from coordinator.uploads import Uploads
from libs.errors import NotFound, NsflError, ValidationFailed
from libs.jobspec import JobSpec
from libs.jobspec.spec import ModelRef
from libs.objects.protocol import ObjectStore
from libs.protos import coordinator_pb2
from libs.records import MODELS, CheckpointRecord, JobState, RoundRecord, as_model, as_round_record, model_key
from libs.structured_logging import log_context
from libs.weights.tensors import decode

log = logging.getLogger(__name__)


class JobFailed(Exception):
    pass


class Driver:
    def __init__(self, spec: JobSpec, *, runner: RoundRunner, checkpoints: CheckpointStore,
                 objects: ObjectStore, reporter: ProgressReporter, step: JobAlgorithm,
                 make_aggregator: Callable[[GlobalModel], UpdateSink],
                 clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.plan = runner.plan
        self.job_id = self.plan.job_id
        self.runner = runner
        self.checkpoints = checkpoints
        self.objects = objects
        self.reporter = reporter
        self.step = step
        self.make_aggregator = make_aggregator
        self.clock = clock
        self.rounds = spec.rounds
        self.evaluate_every = spec.evaluate_every
        self.checkpoint_every = spec.checkpoint_every
        self.max_retries = spec.max_retries
        # Round k's evaluation rides on round k+1's train tasks (coordinator.piggyback).
        self.piggyback = EvaluationPiggyback(evaluate_every=self.evaluate_every, rounds=self.rounds)
        # Checkpoints are stored behind the rounds and reported once stored (coordinator.checkpoint_writer).
        self.checkpoint_writer = CheckpointWriter(checkpoints, on_saved=self._checkpoint_saved)
        self._stored_checkpoints: list[CheckpointRecord] = []  # stored, not reported yet
        self.round = 0
        self.last_checkpoint_round = -1
        self.history: list[RoundRecord] = []
        self.state = JobState.STARTING

    # -- what the servicer serves (coordinator.grpc_service.ServedJob) ------------------------
    @property
    def uploads(self) -> Uploads:
        return self.runner.uploads

    @property
    def secure_aggregation(self) -> SecureRounds | None:
        return self.runner.secure_aggregation

    def request_stop(self, reason: str) -> None:
        log.info("stop requested: %s", reason)
        self.runner.stop_event.set()

    def status_message(self) -> coordinator_pb2.CoordinatorStatus:
        return coordinator_pb2.CoordinatorStatus(job_id=self.job_id, state=self.state.value, round=self.round,
                                                 rounds=self.rounds)

    # -- the job ---------------------------------------------------------------------
    async def run(self) -> JobState:
        with log_context(job=self.job_id):
            try:
                await self._prepare()
                await self._report(state=JobState.RUNNING, reason="")
                budget = None  # a privacy budget may end the job before its last round
                while self.round < self.rounds and (budget := self.step.stop_reason()) is None:
                    await self._train_round(self.round + 1)
                await self._finish()
                self.state = JobState.FINISHED
                await self._report(state=JobState.FINISHED, reason=budget or f"completed {self.rounds} rounds")
            except StopRequested:
                await self._save_checkpoint_if_new()
                self.state = JobState.STOPPED
                await self._report(state=JobState.STOPPED, reason=f"stopped after round {self.round}")
            except JobFailed as exc:
                self.state = JobState.FAILED
                await self._report(state=JobState.FAILED, reason=str(exc))
            except NsflError as exc:
                log.error("job failed: %s", exc.message)
                self.state = JobState.FAILED
                await self._report(state=JobState.FAILED, reason=f"{exc.code}: {exc.message}")
            except Exception:
                log.exception("job failed with an internal error")
                self.state = JobState.FAILED
                await self._report(state=JobState.FAILED, reason="internal error in the coordinator; see its log")
            return self.state

    async def _prepare(self) -> None:
        self.step.prepare()  # a bad aggregation, optimizer, DP or extender setting fails the job here
        checkpoint = await self.checkpoints.latest()
        if checkpoint is not None:
            self.round = checkpoint.round
            self.last_checkpoint_round = checkpoint.round
            self.history = list(checkpoint.extra.get("history", []))
            self.step.load_state({**checkpoint.optimizer_arrays, **checkpoint.optimizer_scalars})
            self.runner.model = GlobalModel.from_weights(checkpoint.weights, checkpoint.round)
            log.info("resuming after round %d from checkpoint %s", checkpoint.round, checkpoint.record["key"])
            await self._report(state=JobState.RUNNING, reason=f"resumed from the checkpoint of round {self.round}",
                               history=self.history, checkpoints=await self.checkpoints.records())
            return
        weights = await self._initial_weights()
        self.runner.model = GlobalModel.from_weights(weights, 0)

    async def _initial_weights(self) -> dict[str, Any]:
        spec = self.spec
        if spec.model_path:
            # Keys in a spec are relative to the job's namespace: a job cannot read another's objects.
            return decode(await self.objects.read(f"{self.plan.namespace}/{spec.model_path}"), copy=True)
        if spec.checkpoint_ref is not None:
            ref = spec.checkpoint_ref
            source = CheckpointStore(self.checkpoints.documents, self.objects, namespace=self.plan.namespace,
                                     job=ref.job)
            records = await source.records()
            wanted = [r for r in records if ref.round in (None, r["round"])]
            if not wanted:
                raise JobFailed(f"checkpointRef: job {ref.job!r} has no checkpoint"
                                + (f" for round {ref.round}" if ref.round else ""))
            return (await source.load(wanted[-1])).weights
        if spec.model_ref is not None:
            return await self._registry_weights(spec.model_ref)
        return await self._weights_from_a_client()

    async def _registry_weights(self, ref: ModelRef) -> dict[str, Any]:
        documents = self.checkpoints.documents
        try:
            model = await documents.get(MODELS, model_key(self.plan.namespace, ref.name))
        except NotFound:
            raise JobFailed(f"modelRef: no model {ref.name!r} in namespace {self.plan.namespace}") from None
        document = as_model(model.data)
        versions = document.get("versions", {})
        version = str(ref.version or document.get("latest", ""))
        if version not in versions:
            raise JobFailed(f"modelRef: model {ref.name!r} has no version {version!r}")
        return decode(await self.objects.read(versions[version]["key"]), copy=True)

    async def _weights_from_a_client(self) -> dict[str, Any]:
        for attempt in range(self.max_retries + 1):
            book = await self.runner.run_round(0, "init", attempt=attempt, target=1, minimum=1)
            if self.runner.init_weights is not None:
                log.info("initial model from client %s", book.accepted[0].client_id)
                return self.runner.init_weights
            log.warning("initialising the model failed (attempt %d): %s", attempt, book.close_reason)
            if attempt < self.max_retries:
                await self.runner.pause_before_retry()
        raise JobFailed(f"could not initialise the model from a client: {book.close_reason}")

    async def _train_round(self, round_number: int) -> None:
        with log_context(round=round_number):
            started = self.clock()
            base = self.runner.model
            assert base is not None
            for attempt in range(self.max_retries + 1):
                try:  # an extender raising, or a rule left without enough updates, fails this attempt only
                    # The published model may carry attachments (SCAFFOLD's c, broadcast files), the
                    # tasks' parameters a broadcast extender's, and their settings what clients must know
                    # of the algorithm.
                    model, parameters = await run_sized(
                        self._work_size(base), self.step.broadcast, base, round_number, self.plan.parameters)
                    self.runner.model = model
                    self.runner.plan = dataclasses.replace(self.runner.plan, parameters=parameters,
                                                           algorithm=self.step.client_settings())
                    aggregator = self.make_aggregator(model)
                    piggyback = {"evaluate_first": True} if self.piggyback.wanted(round_number, self.history) else {}
                    book = await self.runner.run_round(
                        round_number, "train", attempt=attempt, target=self.plan.clients_per_round,
                        minimum=self.plan.min_clients, aggregator=aggregator,
                        next_round=round_number < self.rounds,
                        offer_next=round_number < self.rounds and not self._evaluates_apart(round_number),
                        next_evaluate_first=self.piggyback.defers(round_number), **piggyback)
                    if book.succeeded:
                        new_weights = await run_sized(
                            self._work_size(base), self.step.apply, base.weights, aggregator.result())
                        break
                    failure = f"{len(book.accepted)}/{book.minimum} updates needed ({book.close_reason})"
                except RoundFailed as exc:
                    failure = exc.message
                log.warning("round %d attempt %d failed: %s", round_number, attempt, failure)
                if attempt < self.max_retries:
                    await self.runner.pause_before_retry()
            else:
                raise JobFailed(f"round {round_number} failed after {self.max_retries + 1} attempts: {failure}")
            revised = self.piggyback.file(round_number, book.accepted, self.history, self.clock())
            self.runner.model = GlobalModel.from_weights(new_weights, round_number)
            self.round = round_number
            secure = self.runner.secure_aggregation
            record = as_round_record({
                **book.summary(), "attempt": attempt, "startedAt": started, "endedAt": self.clock(),
                "trainMetrics": weighted_metrics(book.accepted), "modelSha256": self.runner.model.sha256,
                "samples": sum(t.num_samples for t in book.accepted),
                # secure aggregation's stage counts (samples = the decoded Σ w_i)
                **(secure.record_fields() if secure is not None else {}),
                **self.step.round_report(),  # privacy spent, screening, extender metrics
            })
            if self._evaluates_apart(round_number):
                record["evaluation"] = await self._evaluate(round_number)
            self.history.append(record)
            if self.checkpoint_every and round_number % self.checkpoint_every == 0:
                self._checkpoint_behind()
            # With the previous round's record, now holding its evaluation: one report a round.
            await self._report(state=JobState.RUNNING, reason="", round=round_number, round_record=record,
                               revised=() if revised is None else (revised,), **self.step.status_fields())

    def _evaluates_apart(self, round_number: int) -> bool:
        """Whether an evaluation round of its own follows train round ``round_number``."""
        return bool(self.evaluate_every and round_number % self.evaluate_every == 0
                    and not self.piggyback.defers(round_number))

    async def _evaluate(self, round_number: int) -> dict[str, float]:
        book = await self.runner.run_round(round_number, "evaluate", attempt=0,
                                           target=self.plan.clients_per_round, minimum=1)
        if not book.accepted:
            log.warning("evaluation after round %d got no results: %s", round_number, book.close_reason)
            return {}
        metrics = weighted_metrics(book.accepted)
        log.info("evaluation after round %d: %s", round_number, metrics)
        return metrics

    async def _finish(self) -> None:
        if self.history and "evaluation" not in self.history[-1]:
            self.history[-1]["evaluation"] = await self._evaluate(self.round)
        await self._save_checkpoint_if_new()
        model = self.runner.model
        assert model is not None
        # The last aggregate, as its round served it (no attachments: those ride on a published model only).
        final = await self.checkpoints.save_output("model.safetensors", model.payload)
        await self._report(final_model=final)

    def _work_size(self, model: GlobalModel) -> int:
        """What decides where the server step runs (coordinator.offload): extenders run user code, so a
        job with extenders always steps in a thread."""
        return sys.maxsize if self.spec.extenders is not None else model.size

    def _checkpoint_behind(self) -> None:
        model = self.runner.model
        if model is None:
            raise ValidationFailed("no model to checkpoint")
        self.checkpoint_writer.submit(self.round, model.weights, self.step.state(), self.history)
        self.last_checkpoint_round = self.round

    async def _checkpoint_saved(self, record: CheckpointRecord) -> None:
        # Reported with the next round's report rather than in one of its own: a report is a store
        # write for the scheduler, and a round already sends one.
        self._stored_checkpoints.append(record)

    async def _save_checkpoint_if_new(self) -> None:
        await self.checkpoint_writer.drain()
        while self._stored_checkpoints:
            await self._report(checkpoint=self._stored_checkpoints.pop(0))
        if self.round > 0 and self.last_checkpoint_round != self.round:
            await self._report(checkpoint=await self._save_checkpoint())

    async def _save_checkpoint(self) -> CheckpointRecord:
        model = self.runner.model
        if model is None:
            raise ValidationFailed("no model to checkpoint")
        record = await self.checkpoints.save(self.round, model.weights, self.step.state(),
                                             {"history": self.history})
        self.last_checkpoint_round = self.round
        return record

    async def _report(self, **fields: Any) -> None:
        if "state" in fields:
            self.state = JobState(fields["state"])
        if "checkpoint" not in fields and self._stored_checkpoints:
            fields["checkpoint"] = self._stored_checkpoints.pop(0)
        await self.reporter.update(rounds=self.rounds, **{"round": self.round, **fields})
