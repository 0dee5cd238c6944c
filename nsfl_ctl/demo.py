"""``nsfl-ctl demo``: a real federated job on this machine, from nothing to a trained model.

The steps, each printed as it happens:

1. start the standalone control plane in a state directory (a fresh
   temporary one unless ``--state-dir``), every port chosen by the OS;
2. split scikit-learn's digits into disjoint IID shares, one per client,
   with the example's own ``data.py``;
3. write one task manager config per client (offering only its own share,
   with a client certificate issued from the plane's CA in ``<state>/pki``:
   every link runs mutual TLS) and start the task managers as background
   processes;
4. wait until the API lists every client alive (they register with the
   selector over their outbound stream);
5. submit the example's ``job.yaml`` through the REST API and watch it with
   the same progress bar as ``get job -w``;
6. print the final accuracy, register the final model in the registry and
   download it, and plot accuracy and loss per round to a PNG.

Whatever happens (success, a failed job, Ctrl-C, SIGTERM) the ``finally``
stops the task managers, then the control plane and its coordinators, with
Ctrl-C and SIGTERM ignored while it does so a second keypress cannot leave
processes behind.  A temporary state directory is removed afterwards except
for ``results/`` (the model and the plot); ``--keep``, or a demo that
failed (but was not interrupted), keeps all of it (logs, store, client
workspaces) for a look inside.

Everything runs against the public REST API with the same client the other
commands use, so the demo is also an end-to-end check of the CLI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from libs.errors import AlreadyExists, DeadlineExceeded, NsflError, TaskFailed, Unavailable
from nsfl_ctl import config as cli_config
from nsfl_ctl import digits_example, pki, plots, processes, standalone
from nsfl_ctl.client import ApiClient, path_of
from nsfl_ctl.control_plane_plan import PKI_DIR, Ports, base_environment, python_command
from nsfl_ctl.processes import ProcessRecord
from nsfl_ctl.watch import watch_job

CLIENT_START_SECONDS = 120.0
NAMESPACE = "default"
MODEL_NAME = "digits-demo"


@dataclass(frozen=True)
class DemoOptions:
    rounds: int = 5
    clients: int = 3
    state_dir: Path | None = None
    keep: bool = False
    timeout: float = 170.0
    min_accuracy: float = 0.9


@dataclass
class DemoRun:
    """What the demo started and produced, filled in step by step."""

    state_dir: Path
    temporary: bool
    managers: list[tuple[str, ProcessRecord, Path]] = field(default_factory=list)
    plane_started: bool = False
    job: Mapping[str, Any] = field(default_factory=dict)
    accuracy: float | None = None
    loss: float | None = None
    model_path: Path | None = None
    plot_path: Path | None = None

    @property
    def results_dir(self) -> Path:
        return self.state_dir / "results"


def run_demo(options: DemoOptions, console: Console) -> DemoRun:
    """Run the demo (see the module docstring); :func:`verdict` says whether it succeeded."""
    temporary = options.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="nsfl-demo-")) if temporary else Path(options.state_dir or ".")
    run = DemoRun(state_dir.resolve(), temporary)
    deadline = time.monotonic() + options.timeout
    # A failed demo keeps its state directory (logs, store) for a look; an interrupted one does not.
    keep = True
    with _signals_as_interrupt():
        try:
            _run_steps(run, options, console, deadline)
            keep = options.keep or verdict(run, options) is not None
        except KeyboardInterrupt:
            keep = options.keep
            raise
        finally:
            with _signals_ignored():
                _shut_down(run, console, keep=keep)
    return run


def _run_steps(run: DemoRun, options: DemoOptions, console: Console, deadline: float) -> None:
    say = console.print
    say(f"[bold]1/6[/] starting the standalone control plane in {run.state_dir}")
    plane = standalone.up(
        run.state_dir, ports=Ports(api=0, selector=0, scheduler=0), timeout=_left(deadline, 60.0),
        report=lambda line: console.print(line, markup=False, highlight=False),
    )  # fmt: skip
    if plane.already_running:  # someone else's: not ours to use or to stop
        raise AlreadyExists(
            f"a standalone control plane already runs in {run.state_dir}; give the demo another --state-dir"
        )
    run.plane_started = True  # from here on, the finally stops it (up cleans up after itself on failure)
    cli_config.write_file(
        run.state_dir / "nsfl-ctl.yaml", cli_config.CliConfig(api=plane.api_url, token=plane.token)
    )
    client = ApiClient(plane.api_url, plane.token, timeout=30.0)
    say(f"      API {plane.api_url}, selector {plane.selector_address}")

    say(f"[bold]2/6[/] splitting the digits into {options.clients} disjoint shares")
    shares = digits_example.write_shares(run.state_dir / "data", options.clients)

    say(f"[bold]3/6[/] starting {options.clients} task managers")
    for client_id, share in sorted(shares.items()):
        _start_manager(run, client_id, share, plane.selector_address)

    say("[bold]4/6[/] waiting for the clients to register")
    _wait_for_clients(client, run, _left(deadline, CLIENT_START_SECONDS))

    spec = digits_example.job_spec(rounds=options.rounds, clients=options.clients, namespace=NAMESPACE)
    name = str(spec["name"])
    job_path = path_of("api", "v1", "namespaces", NAMESPACE, "jobs", name)
    client.post(path_of("api", "v1", "namespaces", NAMESPACE, "jobs"), spec)
    say(f"[bold]5/6[/] job {NAMESPACE}/{name} submitted: {options.rounds} rounds, {options.clients} clients")
    run.job = watch_job(
        lambda: client.get(job_path), label=name, console=console, timeout=_left(deadline, 0.0)
    )

    say("[bold]6/6[/] results")
    _collect_results(client, run, job_path, name)


def verdict(run: DemoRun, options: DemoOptions) -> TaskFailed | None:
    """Why the demo failed (the job did not finish, or finished below the target accuracy), or None."""
    state = run.job.get("state")
    if state != "FINISHED":
        return TaskFailed(f"the demo job ended {state}: {run.job.get('reason') or 'no reason given'}")
    if run.accuracy is None or run.accuracy < options.min_accuracy:
        shown = "unknown" if run.accuracy is None else f"{run.accuracy:.4f}"
        return TaskFailed(f"the demo job finished with accuracy {shown}, below {options.min_accuracy}")
    return None


def _left(deadline: float, cap: float) -> float:
    """Seconds left before ``deadline`` (at most ``cap`` when ``cap`` > 0); DeadlineExceeded at 0."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the demo ran out of time (see --timeout)")
    return min(left, cap) if cap > 0 else left


def _start_manager(run: DemoRun, client_id: str, share: digits_example.Share, selector: str) -> None:
    directory = run.state_dir / "clients" / client_id
    settings = digits_example.client_config(
        client_id, selector_address=selector, workspace=directory / "workspace", share=share,
        wire=pki.client_wire_settings(run.state_dir / PKI_DIR, client_id),
    )  # fmt: skip
    path = digits_example.write_client_config(directory / "client.yaml", settings)
    log_file = directory / "task-manager.log"
    argv = python_command("task_manager", "--config", str(path))
    record = processes.spawn_detached(argv, env=base_environment(os.environ), log_file=log_file)
    run.managers.append((client_id, record, log_file))


def _wait_for_clients(client: ApiClient, run: DemoRun, seconds: float) -> None:
    wanted = {client_id for client_id, _, _ in run.managers}
    deadline = time.monotonic() + seconds
    alive: set[str] = set()
    while True:
        for client_id, record, log_file in run.managers:
            if not processes.is_alive(record):
                raise Unavailable(
                    f"the task manager of {client_id} exited: {processes.tail(log_file, 5)}".replace(
                        "\n", " | "
                    )
                )
        with contextlib.suppress(Unavailable, DeadlineExceeded):
            listed = client.get("/api/v1/clients", {"includeLost": False}).get("clients", [])
            alive = {c.get("clientId") for c in listed if c.get("liveness") == "alive"} & wanted
        if alive == wanted:
            return
        if time.monotonic() >= deadline:
            missing = ", ".join(sorted(wanted - alive))
            raise DeadlineExceeded(
                f"clients {missing} did not register in {seconds:.0f}s; see {run.state_dir}/clients"
            )
        time.sleep(0.5)


def _collect_results(client: ApiClient, run: DemoRun, job_path: str, name: str) -> None:
    records = client.get(job_path + "/metrics").get("rounds", [])
    metrics = plots.round_metrics(records)
    last = dict((run.job.get("status") or {}).get("lastMetrics") or {})
    if metrics:
        run.accuracy, run.loss = metrics[-1].accuracy, metrics[-1].loss
    else:
        run.accuracy, run.loss = last.get("accuracy"), last.get("loss")
    if run.job.get("state") != "FINISHED":
        return
    if metrics:
        run.plot_path = plots.plot_accuracy_loss(
            metrics, run.results_dir / "accuracy_loss.png", title=f"{name}: evaluation per round"
        )
    run.model_path = _fetch_model(client, run, job_path)


def _fetch_model(client: ApiClient, run: DemoRun, job_path: str) -> Path | None:
    """The final model, registered in the registry and downloaded; else copied from the object store."""
    target = run.results_dir / "model.safetensors"
    try:
        version = client.post(job_path + ":register-model", {"model": MODEL_NAME})
        number = str(version["version"])
        download = path_of(
            "api", "v1", "namespaces", NAMESPACE, "models", MODEL_NAME, "versions", number, "download"
        )
        client.download(download, target, expected_sha256=version.get("sha256"))
        return target
    except NsflError:
        pass
    final = (run.job.get("status") or {}).get("finalModel") or {}
    key = final.get("key") if isinstance(final, dict) else None
    source = run.state_dir / "objects" / str(key) if isinstance(key, str) else None
    if (
        source is None
        or not source.resolve().is_relative_to(run.state_dir / "objects")
        or not source.is_file()
    ):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _shut_down(run: DemoRun, console: Console, *, keep: bool) -> None:
    console.print("shutting down the task managers and the control plane")
    outcomes = processes.stop_all([record for _, record, _ in run.managers], grace=15.0)
    for (client_id, _, _), outcome in zip(run.managers, outcomes, strict=True):
        if outcome == "killed":
            console.print(f"  task manager {client_id} did not stop in time and was killed")
    if run.plane_started:
        for row in standalone.down(run.state_dir, grace=10.0):
            if row["result"] == "killed":
                console.print(f"  {row['component']} (pid {row['pid']}) did not stop in time and was killed")
    if not run.temporary:
        return
    if keep:
        console.print(
            f"kept the state directory {run.state_dir} (logs under logs/ and clients/)", highlight=False
        )
        return
    for entry in run.state_dir.iterdir():
        if entry.name == "results":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run.state_dir.rmdir()  # only when nothing was produced


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (so ``finally`` cleans up), where signals can be handled."""
    with _handlers({signal.SIGTERM: _raise_interrupt}):
        yield


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    with _handlers({signal.SIGTERM: signal.SIG_IGN, signal.SIGINT: signal.SIG_IGN}):
        yield


@contextlib.contextmanager
def _handlers(handlers: Mapping[signal.Signals, Callable[[int, Any], Any] | int]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
