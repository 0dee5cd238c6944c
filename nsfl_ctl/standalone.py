"""The standalone control plane: selector, scheduler and API server on loopback, one state directory.

``standalone up`` starts, in this order (each needs the address of the one
before), as detached background processes:

1. ``python -m client_selector --listen 127.0.0.1:<selector port> --port-file ...``
2. ``python -m job_scheduler --listen 127.0.0.1:0 --port-file ...`` (platform ``local``)
3. ``python -m api_server --port-file ...`` listening on ``127.0.0.1:<port>``

They share one SQLite store (``sqlite://<state>/nsfl.db``) and one object
store (``file://<state>/objects``), given to each through its
``NSFL_<COMPONENT>_*`` variables.  Every gRPC link runs mutual TLS: before
anything starts, ``up`` makes a local CA in ``<state>/pki`` if there is none
and issues the selector's, scheduler's and API server's certificates (for
127.0.0.1 and localhost; again when one is missing or near its end), and
each component gets its files through its variables (see
``control_plane_plan``).  There is no plaintext switch.  A port of 0 means "any free port": every
component writes the port it bound to its port file, which is how ``up``
learns it without racing for a free port.  The API answers
``/readyz`` once the store and the scheduler answer it; ``up`` waits for
that, with a deadline, and if a component exits or does not come up in
time it stops the others, prints the component's log tail and fails.

The layout of the state directory::

    standalone.json       pids, start times, ports, log paths (see ``Record``)
    tokens.yaml           the admin token, generated on first start (0600)
    pki/                  the local CA and every issued certificate (see libs.pki.directory)
    nsfl.db               the shared SQLite store
    objects/              models, checkpoints, outputs
    jobs/<ns>/<name>/     one work directory per coordinator (the scheduler's)
    logs/<component>.log  each component's output
    run/<component>.port  port files

``down`` stops the API server, the scheduler and the selector (SIGTERM, then
SIGKILL after the grace period).  Coordinators outlive their scheduler by
design (a restarted scheduler adopts them), so ``down`` also stops every
process started with ``--workdir`` inside ``<state>/jobs``: after ``down``
nothing of this state directory is left running.

Building the plan (argv and environment of each component) is pure and
lives in ``control_plane_plan``; tests run the same launcher with stand-in
components (``Modules``).
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import yaml

from libs.errors import InvalidSetting, InvalidState, NotFound, Unavailable
from libs.files import write_json_atomic
from libs.service import read_port_file
from nsfl_ctl import pki, processes
from nsfl_ctl.control_plane_plan import (
    HOST,
    PKI_DIR,
    TOKEN_FILE,
    Component,
    Modules,
    Ports,
    api_component,
    plane_tls,
    scheduler_component,
    selector_component,
)
from nsfl_ctl.processes import ProcessRecord

RECORD_FILE = "standalone.json"
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_GRACE = 15.0


class ComponentEntry(TypedDict):
    """A started component as ``standalone.json`` records it."""

    name: str
    pid: int
    startTime: float
    port: int
    log: str


class ComponentStatus(TypedDict):
    """One row of ``standalone status``."""

    component: str
    state: str  # "alive" or "dead"
    pid: int
    address: str
    log: str


class StopOutcome(TypedDict):
    """One row of ``standalone down``: what stopping a process did (see ``processes.stop``)."""

    component: str
    pid: int
    result: str


@dataclass
class Running:
    """A started component: its process, the port it bound and its log."""

    name: str
    process: ProcessRecord
    port: int
    log_file: Path

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def as_dict(self) -> ComponentEntry:
        return {"name": self.name, "pid": self.process.pid, "startTime": self.process.start_time,
                "port": self.port, "log": str(self.log_file)}  # fmt: skip


@dataclass
class ControlPlane:
    """What ``up`` started; written to ``standalone.json``."""

    state_dir: Path
    api_url: str
    token: str
    components: list[Running] = field(default_factory=list)
    already_running: bool = False

    @property
    def selector_address(self) -> str:
        return next(c.address for c in self.components if c.name == "selector")

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / PKI_DIR


def ensure_token(state_dir: Path) -> str:
    """The admin token of ``state_dir``, generated (and its file written 0600) on first start."""
    path = state_dir / TOKEN_FILE
    if path.exists():
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            document = None
        entries = document.get("tokens") if isinstance(document, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if (
                isinstance(entry, dict)
                and entry.get("role") == "admin"
                and isinstance(entry.get("token"), str)
            ):
                return str(entry["token"])
        raise InvalidSetting(f"{path} holds no admin token; delete it to have a new one generated")
    token = secrets.token_urlsafe(32)
    new_document = {
        "tokens": [{"name": "standalone-admin", "token": token, "namespaces": ["*"], "role": "admin"}]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(
            "# Bearer tokens of this standalone control plane (generated by nsfl-ctl standalone up)\n"
        )
        handle.write(yaml.safe_dump(new_document, sort_keys=False))
    return token


# --- running ------------------------------------------------------------------------------------


def up(
    state_dir: Path,
    *,
    ports: Ports = Ports(),
    modules: Modules = Modules(),
    timeout: float = DEFAULT_START_TIMEOUT,
    env: Mapping[str, str] | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> ControlPlane:
    """Start the control plane of ``state_dir`` and wait until the API is ready (see the module docstring).

    If it already runs, nothing is started and the running one is returned
    (``already_running``), so ``up`` can be repeated safely.
    """
    env = os.environ if env is None else env
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    current = read_record(state_dir)
    if current is not None:
        alive = [processes.is_alive(c.process) for c in current.components]
        if alive and all(alive):
            current.token = ensure_token(state_dir)
            current.already_running = True
            return current
        if any(alive):
            raise InvalidState(
                f"the standalone control plane in {state_dir} runs only in part; "
                "stop it with nsfl-ctl standalone down, then start it again"
            )
    for stale in (state_dir / "run").glob("*.port"):
        stale.unlink()
    plane = ControlPlane(state_dir.resolve(), "", ensure_token(state_dir))
    tls = plane_tls(state_dir, pki.ensure_control_plane(state_dir / PKI_DIR).trust_domain())
    deadline = time.monotonic() + timeout
    started = plane.components
    try:
        selector = _start(
            selector_component(state_dir, ports.selector, modules, env, tls), deadline, report, started
        )
        scheduler_plan = scheduler_component(state_dir, ports.scheduler, selector.address, modules, env, tls)
        scheduler = _start(scheduler_plan, deadline, report, started)
        api_plan = api_component(
            state_dir,
            ports.api,
            scheduler=scheduler.address,
            selector=selector.address,
            modules=modules,
            env=env,
            tls=tls,
        )
        api = _start(api_plan, deadline, report, started)
        plane.api_url = f"http://{HOST}:{api.port}"
        write_record(plane)
        _wait_ready(plane.api_url, api, deadline, report)
    except BaseException:
        processes.stop_all([c.process for c in reversed(started)], grace=5.0)
        (state_dir / RECORD_FILE).unlink(missing_ok=True)
        raise
    return plane


def _start(
    component: Component, deadline: float, report: Callable[[str], None], started: list[Running]
) -> Running:
    """Spawn ``component`` (added to ``started`` at once) and wait for its port file.

    On failure its log tail goes to ``report`` and ``Unavailable`` is raised;
    the caller stops everything in ``started``.
    """
    component.port_file.parent.mkdir(parents=True, exist_ok=True)
    record = processes.spawn_detached(component.argv, env=component.env, log_file=component.log_file)
    running = Running(component.name, record, 0, component.log_file)
    started.append(running)
    while True:
        port = read_port_file(component.port_file)
        if port:
            running.port = port
            return running
        _check_still_running(running, report)
        if time.monotonic() >= deadline:
            _report_tail(running, report)
            raise Unavailable(
                f"the {component.name} did not come up in time; its log is {component.log_file}"
            )
        time.sleep(0.05)


def _wait_ready(api_url: str, api: Running, deadline: float, report: Callable[[str], None]) -> None:
    while True:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                api_url + "/readyz", timeout=2.0
            ) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        _check_still_running(api, report)
        if time.monotonic() >= deadline:
            _report_tail(api, report)
            raise Unavailable(f"the API at {api_url} was not ready in time; its log is {api.log_file}")
        time.sleep(0.1)


def _check_still_running(running: Running, report: Callable[[str], None]) -> None:
    code = processes.exit_code(running.process)
    if code is None and processes.is_alive(running.process):
        return
    _report_tail(running, report)
    how = f"exited with code {code}" if code is not None else "exited"
    raise Unavailable(f"the {running.name} {how} while starting; its log is {running.log_file}")


def _report_tail(running: Running, report: Callable[[str], None]) -> None:
    text = processes.tail(running.log_file, 20)
    if text:
        report(f"last lines of {running.log_file}:")
        for line in text.splitlines():
            report(f"  {line}")


# --- the record ---------------------------------------------------------------------------------


def write_record(plane: ControlPlane) -> None:
    document = {
        "stateDir": str(plane.state_dir), "api": plane.api_url, "startedAt": time.time(),
        "components": [c.as_dict() for c in plane.components],
    }  # fmt: skip
    write_json_atomic(plane.state_dir / RECORD_FILE, document)


def read_record(state_dir: Path) -> ControlPlane | None:
    """The control plane recorded in ``state_dir`` (None when ``up`` never ran or ``down`` did)."""
    try:
        document = json.loads((state_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    components = [
        Running(
            str(c["name"]),
            ProcessRecord(int(c["pid"]), float(c["startTime"])),
            int(c["port"]),
            Path(c["log"]),
        )
        for c in document.get("components", [])
    ]
    return ControlPlane(state_dir.resolve(), str(document.get("api", "")), "", components)


def status(state_dir: Path) -> list[ComponentStatus]:
    """Each recorded component (and each coordinator found) with whether it is alive."""
    plane = read_record(state_dir)
    if plane is None:
        raise NotFound(f"no standalone control plane in {state_dir}; start one with nsfl-ctl standalone up")
    rows: list[ComponentStatus] = [
        {"component": c.name, "state": "alive" if processes.is_alive(c.process) else "dead",
         "pid": c.process.pid, "address": c.address, "log": str(c.log_file)}
        for c in plane.components
    ]  # fmt: skip
    for coordinator in processes.processes_with_argument("--workdir", state_dir / "jobs"):
        rows.append(
            {"component": "coordinator", "state": "alive", "pid": coordinator.pid, "address": "", "log": ""}
        )
    return rows


def down(state_dir: Path, *, grace: float = DEFAULT_STOP_GRACE) -> list[StopOutcome]:
    """Stop the components (API first) and every coordinator of ``state_dir``; what happened to each."""
    plane = read_record(state_dir)
    results: list[StopOutcome] = []
    if plane is not None:
        ordered = list(reversed(plane.components))
        for component in ordered:
            outcome = processes.stop(component.process, grace=grace)
            results.append({"component": component.name, "pid": component.process.pid, "result": outcome})
    coordinators = processes.processes_with_argument("--workdir", state_dir / "jobs")
    for record, outcome in zip(coordinators, processes.stop_all(coordinators, grace=grace), strict=True):
        results.append({"component": "coordinator", "pid": record.pid, "result": outcome})
    (state_dir / RECORD_FILE).unlink(missing_ok=True)
    return results
