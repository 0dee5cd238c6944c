"""Wiring of one coordinator process: stores, selector client, gRPC server, driver.

The only place that opens connections and starts servers; everything it
builds is passed explicitly to the driver and the servicer.  One
:class:`~libs.wire.Wire` serves the job's executors and dials the selector
and the scheduler, with the certificate the scheduler signed for this job:
it must name this very job (:func:`open_wire`), since clients dial the
coordinator by its job's identity and the selector and the scheduler let a
coordinator act only on its own job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path

from coordinator.algorithms import JobAlgorithm
from coordinator.checkpoints import CheckpointStore
from coordinator.driver import Driver
from coordinator.grpc_service import CoordinatorService
from coordinator.job_plan import JobPlan
from coordinator.progress import ProgressReporter
from coordinator.round_runner import RoundRunner
from coordinator.secure_encoding import config_from_spec
from coordinator.secure_rounds import SecureRounds
from coordinator.selector_client import SelectorClient
from coordinator.settings import CoordinatorSettings
from libs.errors import InvalidSetting
from libs.jobspec import JobSpec, parse_spec_text
from libs.objects import open_object_store
from libs.protos import coordinator_pb2_grpc
from libs.records import EXIT_CODES, EXIT_FAILED
from libs.service import handle_stop_signals
from libs.store import open_document_store
from libs.wire import Wire

log = logging.getLogger(__name__)

def load_job(path: Path) -> JobSpec:
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text) if path.suffix == ".json" else parse_spec_text(text, str(path))
    return JobSpec.parse(raw)


def open_wire(settings: CoordinatorSettings, job_id: str) -> Wire:
    """This process's wire; its certificate must be the coordinator identity of ``job_id``."""
    wire = Wire.from_settings(settings, role="coordinator")
    identity = wire.identity
    if identity is not None and identity.job_id != job_id:
        raise InvalidSetting(
            f"setting 'tls_cert' ({settings.tls_cert}) identifies {identity.uri}, the coordinator of job "
            f"{identity.job_id}, but this coordinator runs job {job_id}; give it the certificate the "
            "scheduler issued for this job"
        )
    return wire


async def end_client_tasks(selector: SelectorClient, job_id: str, clients: set[str], state: str) -> None:
    """Cancel the job on every client it used: their task managers stop the job's executors, which
    otherwise stay up, waiting for its next round, until they have been idle for a while."""
    if not clients:
        return
    try:
        await selector.cancel(job_id, sorted(clients), f"the job ended {state}")
    except Exception as exc:  # the clients' idle timeout stops the executors all the same
        log.warning("could not tell the clients that job %s ended: %s", job_id, exc)


async def run(settings: CoordinatorSettings) -> int:
    spec = load_job(settings.job)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    plan = JobPlan.of(spec)
    wire = open_wire(settings, plan.job_id)  # before anything is opened: a wrong certificate stops here
    # Every resource is closed on the way out, whatever fails: an unclosed store
    # thread would keep the process alive after an error.
    async with contextlib.AsyncExitStack() as resources:
        documents = await open_document_store(settings.document_store)
        resources.push_async_callback(documents.close)
        objects = open_object_store(settings.object_store)
        resources.push_async_callback(objects.close)
        selector = SelectorClient(settings.selector, wire)
        resources.push_async_callback(selector.close)
        reporter = ProgressReporter(settings.workdir / "status.json", job_id=plan.job_id,
                                    scheduler=settings.scheduler or None, token=settings.token, wire=wire)
        resources.push_async_callback(reporter.close)
        server = wire.server()
        port = wire.add_port(server, settings.listen)
        endpoint = f"{settings.advertise_host}:{port}"
        stop = asyncio.Event()
        secure = config_from_spec(spec)
        runner = RoundRunner(plan, selector, lambda: endpoint, stop_event=stop,
                             secure_aggregation=SecureRounds(secure) if secure is not None else None)
        checkpoints = CheckpointStore(documents, objects, namespace=plan.namespace, job=spec.name)
        # Configuration errors surface in Driver.run (JobAlgorithm.prepare) as a FAILED job with the reason.
        algorithm = JobAlgorithm(spec, extenders_root=settings.extenders_root)
        driver = Driver(spec, runner=runner, checkpoints=checkpoints, objects=objects, reporter=reporter,
                        step=algorithm, make_aggregator=algorithm.new_round)
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(driver), server)
        await server.start()
        resources.push_async_callback(server.stop, 1.0)
        handle_stop_signals(lambda sig: driver.request_stop(f"signal {sig.name}"))
        log.info("coordinator for %s serving on %s", plan.job_id, endpoint)
        await reporter.update(endpoint=endpoint, pid=os.getpid())
        state = await driver.run()
        await runner.release_all()
        await end_client_tasks(selector, plan.job_id, runner.participants, state)
    log.info("job %s ended %s", plan.job_id, state)
    return EXIT_CODES.get(state, EXIT_FAILED)
