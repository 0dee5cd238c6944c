"""Running a service: the Error line and exit code, the port file while serving, a graceful stop on signals."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from libs import service
from libs.errors import InvalidSetting, NotFound
from libs.service import on_stop_signals, read_port_file, serve_until_stopped, service_arguments


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """``run_main`` configures the root logger, as a process does; later tests get theirs back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_main(*args: Any, **kwargs: Any) -> int:
    """:func:`libs.service.run_main` in a copied context: its logging component stays there."""
    return contextvars.copy_context().run(service.run_main, *args, **kwargs)


@dataclass(frozen=True)
class Settings:
    log_level: str = "INFO"
    log_json: bool = False


@dataclass
class FakeService:
    """Records what happened to it; its port file is checked while it serves."""

    port_file: Path | None = None
    events: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    port_seen_while_serving: int | None = None

    async def start(self) -> int:
        self.events.append("start")
        self.started.set()
        return 4711

    async def stop(self) -> None:
        if self.port_file is not None:
            self.port_seen_while_serving = read_port_file(self.port_file)
        self.events.append("stop")


async def test_a_service_serves_with_its_port_file_until_sigterm_then_stops_and_removes_it(
    tmp_path: Path,
) -> None:
    port_file = tmp_path / "run" / "service.port"
    port_file.parent.mkdir()
    service = FakeService(port_file)
    serving = asyncio.create_task(serve_until_stopped(service, name="fake service", port_file=port_file))
    await asyncio.wait_for(service.started.wait(), 5)
    assert read_port_file(port_file) == 4711  # written before the service waits for its stop
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(serving, 5)
    assert service.events == ["start", "stop"]
    assert service.port_seen_while_serving == 4711
    assert not port_file.exists(), "a stopped service leaves no port file"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handlers go with the service"


async def test_a_service_given_its_own_stop_event_installs_no_signal_handler() -> None:
    stop = asyncio.Event()
    service = FakeService()
    serving = asyncio.create_task(serve_until_stopped(service, name="fake", stop=stop, signals=False))
    await asyncio.sleep(0)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    stop.set()
    await asyncio.wait_for(serving, 5)
    assert service.events == ["start", "stop"]


async def test_a_stop_signal_calls_back_with_the_signal_while_inside() -> None:
    received: list[signal.Signals] = []
    with on_stop_signals(received.append):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
    assert received == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_missing_or_half_written_port_file_reads_as_no_port(tmp_path: Path) -> None:
    assert read_port_file(tmp_path / "absent.port") == 0
    (tmp_path / "empty.port").write_text("")
    assert read_port_file(tmp_path / "empty.port") == 0
    (tmp_path / "ok.port").write_text("50051\n")
    assert read_port_file(tmp_path / "ok.port") == 50051


def test_the_common_flags_parse_and_name_the_settings_variables() -> None:
    parser = service_arguments("python -m fake", "a fake service", variables="NSFL_FAKE_*")
    args = parser.parse_args(["--config", "s.yaml", "--listen", "127.0.0.1:0", "--port-file", "p"])
    assert (args.config, args.listen, args.port_file) == (Path("s.yaml"), "127.0.0.1:0", Path("p"))
    assert "NSFL_FAKE_* variables win" in parser.format_help()
    bare = service_arguments("python -m fake", "", variables="NSFL_FAKE_*", listen=False, port_file=False)
    with pytest.raises(SystemExit):
        bare.parse_args(["--listen", "127.0.0.1:0"])


def test_a_bad_setting_is_one_error_line_with_the_catalogues_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def load() -> Settings:
        raise InvalidSetting("setting 'listen' must be host:port, got 'nowhere'")

    async def run(settings: Settings) -> None:
        raise AssertionError("never runs")

    assert run_main(load, run, component="fake", name="fake service") == 2
    assert capsys.readouterr().err == "Error: setting 'listen' must be host:port, got 'nowhere'\n"


def test_an_error_while_running_is_logged_and_printed_and_its_code_can_be_fixed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def run(settings: Settings) -> None:
        raise NotFound("no such job")

    assert run_main(Settings, run, component="fake", name="fake service") == 3  # the catalogue's
    assert run_main(Settings, run, component="fake", name="fake service", error_exit_code=2) == 2
    err = capsys.readouterr().err
    assert "fake service stopped: no such job" in err
    assert err.splitlines()[-1] == "Error: no such job"


def test_the_run_returns_the_exit_code_and_an_early_interrupt_is_a_clean_exit() -> None:
    async def finished(settings: Settings) -> int:
        return 3

    async def interrupted(settings: Settings) -> None:
        raise KeyboardInterrupt

    assert run_main(Settings, finished, component="fake", name="fake") == 3
    assert run_main(Settings, interrupted, component="fake", name="fake") == 0
    with pytest.raises(KeyboardInterrupt):
        run_main(Settings, interrupted, component="fake", name="fake", interrupted_exit_code=None)


def test_a_servers_main_passes_listen_to_the_settings_and_the_port_file_to_serve(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def load(config: Path | None, overrides: dict[str, Any] | None) -> Settings:
        seen.update(config=config, overrides=overrides)
        return Settings()

    async def serve(settings: Settings, *, port_file: Path | None = None) -> None:
        seen["port_file"] = port_file

    def main(argv: list[str]) -> int:
        return service.serve_main(
            argv, prog="python -m fake", description="", variables="NSFL_FAKE_*", component="fake",
            name="fake", load=load, serve=serve,
        )  # fmt: skip

    argv = ["--config", "s.yaml", "--listen", "127.0.0.1:0", "--port-file", str(tmp_path / "p")]
    assert contextvars.copy_context().run(main, argv) == 0
    assert seen == {"config": Path("s.yaml"), "overrides": {"listen": "127.0.0.1:0"}, "port_file": tmp_path / "p"}
    assert contextvars.copy_context().run(main, []) == 0
    assert seen == {"config": None, "overrides": None, "port_file": None}
