"""A stand-in for ``python -m coordinator`` that the scheduler's tests launch through the local platform.

It takes the real coordinator's flags and reads its behaviour from the
job's ``parameters.fake`` (so each job of a test can behave differently):

- ``launchesFile``: append one line ``<job id> <pid>`` per start (to count launches);
- ``rounds`` / ``roundSeconds``: report that many rounds, sleeping between them;
- ``exit``: the exit code after the rounds (0 writes FINISHED, 1 FAILED, others
  write no final status, like a crash);
- ``holdSeconds``: keep running that long after the rounds before exiting;
- ``stopSeconds``: on SIGTERM, wait that long (ignoring more SIGTERMs) then
  write STOPPED and exit 3;
- ``report``: call ``JobControl.ReportProgress`` with the token from
  ``NSFL_COORDINATOR_TOKEN``, as the real coordinator does (best effort),
  over mutual TLS with the certificate the scheduler issued it
  (``NSFL_COORDINATOR_TLS_*``), or in plaintext if told ``NSFL_COORDINATOR_INSECURE``.

It writes ``status.json`` like the real one (docs/contracts.md), plus
``wire``: the ``NSFL_COORDINATOR_TLS_*`` variables it was started with.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from libs.files import write_json_atomic

STOP_REQUESTED = False


def _on_sigterm(signum: int, frame: object) -> None:
    global STOP_REQUESTED
    STOP_REQUESTED = True


def write_status(workdir: Path, status: dict[str, Any]) -> None:
    write_json_atomic(workdir / "status.json", status, durable=False, indent=None)


def wire_from_environment() -> Any:
    """The coordinator's wire as the scheduler configured it through ``NSFL_COORDINATOR_*`` variables."""
    from libs.wire import Wire, WireSettings

    env = os.environ
    if env.get("NSFL_COORDINATOR_INSECURE") == "true":
        return Wire.insecure()
    crl = env.get("NSFL_COORDINATOR_TLS_CRL")
    settings = WireSettings(
        tls_ca=Path(env["NSFL_COORDINATOR_TLS_CA"]), tls_cert=Path(env["NSFL_COORDINATOR_TLS_CERT"]),
        tls_key=Path(env["NSFL_COORDINATOR_TLS_KEY"]), tls_crl=Path(crl) if crl else None,
        trust_domain=env.get("NSFL_COORDINATOR_TRUST_DOMAIN", "nsfl.local"))
    return Wire.from_settings(settings, role="coordinator")


class Reporter:
    def __init__(self, scheduler: str, job_id: str, token: str) -> None:
        from libs.protos import scheduler_pb2, scheduler_pb2_grpc

        self._pb = scheduler_pb2
        wire = wire_from_environment()
        self._channel = wire.sync_channel(scheduler, wire.control("scheduler"))
        self._stub = scheduler_pb2_grpc.JobControlStub(self._channel)
        self._job_id = job_id
        self._token = token

    def send(self, state: str, reason: str, round_number: int, rounds: int,
             record: dict[str, Any] | None = None, checkpoint: dict[str, Any] | None = None) -> None:
        request = self._pb.ProgressReport(
            job_id=self._job_id, coordinator_token=self._token, state=state, reason=reason, round=round_number,
            rounds=rounds, round_json=json.dumps(record) if record else "",
            checkpoint_json=json.dumps(checkpoint) if checkpoint else "")
        try:
            self._stub.ReportProgress(request, timeout=3)
        except Exception as exc:  # best effort, like the real coordinator
            print(f"report failed: {exc}", flush=True)


def _wire_variables() -> dict[str, str]:
    """The wire settings it was given (for the tests to check; the real coordinator reads them)."""
    return {k: v for k, v in os.environ.items()
            if k.startswith(("NSFL_COORDINATOR_TLS_", "NSFL_COORDINATOR_INSECURE", "NSFL_COORDINATOR_TRUST"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    for name in ("job", "workdir", "selector", "listen", "advertise-host", "document-store", "object-store",
                 "scheduler", "token"):
        parser.add_argument(f"--{name}", default="")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    spec = json.loads(Path(args.job).read_text())
    fake = dict(spec.get("parameters", {}).get("fake", {}))
    workdir = Path(args.workdir)
    job_id = f"{spec['namespace']}/{spec['name']}"
    if fake.get("launchesFile"):
        with open(fake["launchesFile"], "a") as handle:
            handle.write(f"{job_id} {os.getpid()}\n")
    token = os.environ.get("NSFL_COORDINATOR_TOKEN", args.token)
    reporter = Reporter(args.scheduler, job_id, token) if fake.get("report") and args.scheduler else None
    rounds = int(fake.get("rounds", 1))
    status: dict[str, Any] = {"job_id": job_id, "state": "RUNNING", "reason": "", "round": 0,
                              "rounds": rounds, "endpoint": "127.0.0.1:1", "history": [],
                              "wire": _wire_variables()}
    write_status(workdir, status)
    print(f"fake coordinator for {job_id} started (pid {os.getpid()})", flush=True)
    if reporter:
        reporter.send("RUNNING", "", 0, rounds)

    def wait(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if STOP_REQUESTED:
                return False
            time.sleep(0.02)
        return not STOP_REQUESTED

    def stopped() -> int:
        time.sleep(float(fake.get("stopSeconds", 0)))
        status.update(state="STOPPED", reason=f"stopped after round {status['round']}")
        write_status(workdir, status)
        if reporter:
            reporter.send("STOPPED", status["reason"], status["round"], rounds)
        print("fake coordinator stopped", flush=True)
        return 3

    for number in range(1, rounds + 1):
        if not wait(float(fake.get("roundSeconds", 0.05))):
            return stopped()
        record = {"round": number, "kind": "train", "accepted": ["c1", "c.2"], "dropped": {"c.3": "late"},
                  "trainMetrics": {"loss": 1.0 / number}, "evaluation": {"accuracy": 0.5 + number / 100}}
        status.update(round=number)
        status["history"].append(record)
        write_status(workdir, status)
        if reporter:
            reporter.send("RUNNING", "", number, rounds, record)
    if not wait(float(fake.get("holdSeconds", 0))):
        return stopped()
    code = int(fake.get("exit", 0))
    if code == 0:
        status.update(state="FINISHED", reason=f"completed {rounds} rounds")
    elif code == 1:
        status.update(state="FAILED", reason="fake failure: round 1 had 0/2 updates")
    if code in (0, 1):
        write_status(workdir, status)
        if reporter:
            reporter.send(status["state"], status["reason"], status["round"], rounds)
    print(f"fake coordinator exits with {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
