"""Running a component as a process: the command line, the ``Error:`` line, signals, the port file.

Every service's ``python -m <component>`` does the same few things, and
each did them in its own copy: parse ``--config`` (and ``--listen``,
``--port-file``), load the settings, print ``Error: <message>`` and exit
with the catalogue's exit code when they are wrong (never a traceback),
configure logging, run until SIGTERM or SIGINT, stop gracefully, and
meanwhile keep a port file saying where it listens.  This module is that
one copy; a component's ``__main__`` names its flags and its settings
loader, and its ``serve`` names what to start and stop.

The pieces, smallest first:

- :func:`write_port_file` / :func:`remove_port_file` / :func:`read_port_file`:
  a launcher (``nsfl-ctl standalone up``, a test) starts a service on port 0
  and learns the port from the file, written atomically once serving and
  removed at the end, so a file that exists names a live server.
- :func:`on_stop_signals` (:func:`handle_stop_signals`, for good): SIGTERM
  and SIGINT call a function (an event's ``set``, a driver's
  ``request_stop``) instead of killing the process.
- :func:`serve_until_stopped`: start a :class:`Service`, write its port
  file, wait for the stop event, stop it, remove the port file.  The signal
  handlers stay until the service has stopped, so a second Ctrl-C does not
  cut a graceful stop short (SIGKILL remains for that).
- :func:`service_arguments` and :func:`run_main`: the command line and the
  process's exit code; :func:`serve_main`, both for a server with the
  usual three flags (the selector, the scheduler, the API server).

This module imports no component (``libs`` never does) and nothing heavy:
``nsfl-ctl`` and the standby coordinator import it on their way up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from libs.errors import NsflError
from libs.files import write_text_atomic
from libs.structured_logging import configure_logging

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class LoggingSettings(Protocol):
    """What :func:`run_main` reads of any component's settings."""

    @property
    def log_level(self) -> str: ...

    @property
    def log_json(self) -> bool: ...


class Service(Protocol):
    """Something that starts (returning its bound port, if it listens on one) and stops (idempotent).

    A ``start`` that fails cleans up after itself before it raises, as every component's app does.
    """

    async def start(self) -> int | None: ...

    async def stop(self) -> None: ...


SettingsT = TypeVar("SettingsT", bound=LoggingSettings)
SettingsT_contra = TypeVar("SettingsT_contra", contravariant=True)


class Serve(Protocol[SettingsT_contra]):
    """A component's ``serve``: run it from its settings until stopped, with an optional port file."""

    def __call__(
        self, settings: SettingsT_contra, /, *, port_file: Path | None = None
    ) -> Coroutine[Any, Any, None]: ...


# --- port files -----------------------------------------------------------------------------------


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` atomically, so a reader never sees a half-written file."""
    write_text_atomic(path, f"{port}\n")


def remove_port_file(path: Path) -> None:
    """A stopped service leaves no port file behind that a launcher could mistake for a live one."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read_port_file(path: Path) -> int:
    """The port a service wrote to ``path``; 0 while there is none (not serving yet, or stopped)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


# --- signals and serving --------------------------------------------------------------------------


def handle_stop_signals(callback: Callable[[signal.Signals], object]) -> None:
    """From now on SIGTERM and SIGINT call ``callback(signal)`` on the running loop.

    For a process that handles them until it ends (the coordinator: a signal that comes while it
    closes its resources must not cut the last status report short).  Only the main thread may
    install signal handlers.
    """
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, callback, sig)


@contextlib.contextmanager
def on_stop_signals(callback: Callable[[signal.Signals], object]) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT call ``callback(signal)`` (:func:`handle_stop_signals`).

    On the way out the default dispositions come back (SIGINT raises ``KeyboardInterrupt`` again).
    """
    handle_stop_signals(callback)
    try:
        yield
    finally:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def serve_until_stopped(
    service: Service,
    *,
    name: str,
    port_file: Path | None = None,
    stop: asyncio.Event | None = None,
    signals: bool = True,
) -> None:
    """Start ``service``, run until ``stop`` is set (or, with ``signals``, SIGTERM/SIGINT), then stop it.

    ``name`` says what stops in the log (``stopping the client selector``).  The port file is written
    once the service serves and removed after it stopped.
    """
    stop = stop or asyncio.Event()
    with on_stop_signals(lambda _sig: stop.set()) if signals else contextlib.nullcontext():
        port = await service.start()
        try:
            if port_file is not None and port is not None:
                write_port_file(port_file, port)
            await stop.wait()
            logging.getLogger(__name__).info("stopping the %s", name)
        finally:
            await service.stop()
            if port_file is not None:
                remove_port_file(port_file)


# --- the command line -----------------------------------------------------------------------------


def service_arguments(
    prog: str,
    description: str,
    *,
    variables: str,
    config_required: bool = False,
    listen: bool = True,
    port_file: bool = True,
) -> argparse.ArgumentParser:
    """The parser of a service's common flags; ``variables`` names its settings variables (``NSFL_API_*``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config", type=Path, required=config_required,
        help=f"YAML or JSON settings file ({variables} variables win)",
    )  # fmt: skip
    if listen:
        parser.add_argument("--listen", help="host:port to listen on (port 0: any free port)")
    if port_file:
        parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    return parser


def run_main(
    load: Callable[[], SettingsT],
    run: Callable[[SettingsT], Coroutine[Any, Any, int | None]],
    *,
    component: str,
    name: str,
    error_exit_code: int | None = None,
    interrupted_exit_code: int | None = 0,
) -> int:
    """Load the settings, configure logging, ``asyncio.run(run(settings))``; the process's exit code.

    An :class:`~libs.errors.NsflError`, from the settings or from the run, prints one
    ``Error: <message>`` line on stderr and exits with the catalogue's code (``error_exit_code``
    instead, for a process whose codes mean something else, as the coordinator's mean the job's
    state); ``run`` returning None exits 0.  A ``KeyboardInterrupt`` before the signal handlers are
    installed exits with ``interrupted_exit_code`` (None: it propagates).
    """
    try:
        settings = load()
        configure_logging(settings.log_level, json_output=settings.log_json, component=component)
    except NsflError as exc:
        return _error(exc, error_exit_code)
    try:
        return asyncio.run(run(settings)) or 0
    except NsflError as exc:
        logging.getLogger(component).error("%s stopped: %s", name, exc.message)
        return _error(exc, error_exit_code)
    except KeyboardInterrupt:
        if interrupted_exit_code is None:
            raise
        return interrupted_exit_code


def serve_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    variables: str,
    component: str,
    name: str,
    load: Callable[[Path | None, dict[str, Any] | None], SettingsT],
    serve: Serve[SettingsT],
) -> int:
    """The whole ``main`` of a server: ``--config``, ``--listen`` (overrides the setting), ``--port-file``.

    ``load(config, overrides)`` is the component's settings loader; ``serve(settings, port_file=...)``
    its :func:`serve_until_stopped` call.
    """
    args = service_arguments(prog, description, variables=variables).parse_args(argv)
    overrides = {"listen": args.listen} if args.listen else None
    return run_main(
        lambda: load(args.config, overrides),
        lambda settings: serve(settings, port_file=args.port_file),
        component=component,
        name=name,
    )


def _error(exc: NsflError, exit_code: int | None) -> int:
    print(f"Error: {exc.message}", file=sys.stderr)
    return exc.entry.exit_code if exit_code is None else exit_code
