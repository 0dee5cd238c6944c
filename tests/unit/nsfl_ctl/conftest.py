"""Fixtures of the CLI tests: a fake REST API on loopback and a runner that points the CLI at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from nsfl_ctl.main import cli
from tests.unit.nsfl_ctl.fake_api import TOKEN, FakeApi, ServerThread

Run = Callable[..., Result]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    server = ServerThread(fake)
    server.start()
    yield fake
    server.stop()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".config" / "nsfl" / "config.yaml"


def invoke(args: tuple[str, ...], env: Mapping[str, str | None], stdin: str | None = None) -> Result:
    base: dict[str, str | None] = {
        "NSFL_API": None, "NSFL_TOKEN": None, "NSFL_NAMESPACE": None, "NSFL_CTL_CONFIG": None,
        "NSFL_CTL_STATE_DIR": None, "COLUMNS": "200",
    }  # fmt: skip
    return CliRunner().invoke(cli, list(args), env={**base, **env}, input=stdin)


@pytest.fixture
def run(api: FakeApi, config_file: Path) -> Run:
    """``run("get", "jobs")``: the CLI against the fake API, with its token, and a config file of its own."""

    def call(*args: str, stdin: str | None = None, **env: str | None) -> Result:
        defaults = {"NSFL_CTL_CONFIG": str(config_file), "NSFL_API": api.url, "NSFL_TOKEN": TOKEN}
        return invoke(args, {**defaults, **env}, stdin)

    return call


def assert_user_error(result: Result, exit_code: int, *fragments: str) -> str:
    """The command failed as a user error: the exit code, one ``Error:`` line naming ``fragments``, no traceback."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
