"""Reaching the API: health, clients, and the errors a user sees when something is off."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.unit.nsfl_ctl.conftest import Run, assert_user_error, invoke
from tests.unit.nsfl_ctl.fake_api import FakeApi


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [("get", "jobs"), ("get", "job", "x", "-w"), ("get", "clients"), ("health",), ("delete", "model", "m"),
     ("logs", "job", "x"), ("download", "model", "m")],
)  # fmt: skip
def test_an_unreachable_api_is_one_error_line_with_the_hint(
    command: tuple[str, ...], closed_port: int, config_file: Path
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    result = invoke(command, {"NSFL_API": url, "NSFL_CTL_CONFIG": str(config_file)})
    assert_user_error(result, 6, f"cannot reach the API at {url}", "nsfl-ctl standalone up")


def test_the_api_flag_overrides_the_environment(run: Run, closed_port: int) -> None:
    result = run("--api", f"http://127.0.0.1:{closed_port}", "get", "jobs")
    assert_user_error(result, 6, f"127.0.0.1:{closed_port}")


def test_a_missing_token_says_how_to_set_one(run: Run) -> None:
    result = run("get", "jobs", NSFL_TOKEN=None)
    assert_user_error(result, 5, "the bearer token is not valid", "nsfl-ctl config set token")


def test_a_wrong_token_is_unauthenticated_with_exit_code_5(run: Run) -> None:
    assert_user_error(run("get", "jobs", NSFL_TOKEN="wrong-token-0000000000"), 5, "not valid")


def test_health_reports_a_ready_api(run: Run) -> None:
    result = run("health", NSFL_TOKEN=None)
    assert result.exit_code == 0, result.output
    assert "ready" in result.output and "scheduler" in result.output


def test_health_fails_naming_the_check_when_not_ready(run: Run, api: FakeApi) -> None:
    api.ready = False
    result = run("health", "-o", "json")
    assert_user_error(result, 6, "scheduler unavailable")
    assert json.loads(result.stdout)["checks"] == {"store": "ok", "scheduler": "unavailable"}


def test_get_clients_shows_liveness_and_datasets(run: Run, api: FakeApi) -> None:
    api.clients = [
        {"clientId": "client-0", "liveness": "alive", "lastHeartbeat": None, "runningTasks": 1,
         "reservedBy": "default/digits", "runtimes": ["pytorch"],
         "datasets": [{"name": "digits", "samples": 383, "tags": []}], "labels": {}, "resources": {}},
        {"clientId": "client-1", "liveness": "lost", "runtimes": ["tensorflow"], "datasets": []},
    ]  # fmt: skip
    result = run("get", "clients")
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert rows[0].split()[:4] == ["CLIENT", "LIVENESS", "RUNTIMES", "DATASETS"]
    assert rows[1].split()[:5] == ["client-0", "alive", "pytorch", "digits:383", "1"]
    assert rows[2].split()[:3] == ["client-1", "lost", "tensorflow"]
    assert json.loads(run("get", "clients", "-o", "json").output)["clients"][1]["clientId"] == "client-1"


def test_get_clients_shows_where_each_registered_from_and_when_its_entry_expires(run: Run, api: FakeApi) -> None:
    api.clients = [
        {"clientId": "client-0", "liveness": "lost", "runtimes": ["pytorch"], "datasets": [],
         "source": "10.1.2.3", "expiresAt": time.time() + 3 * 86400 + 60},
        {"clientId": "client-1", "liveness": "alive", "runtimes": ["pytorch"], "datasets": [],
         "source": "10.1.2.4", "expiresAt": None},
    ]  # fmt: skip
    result = run("get", "clients")
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert "SOURCE" in rows[0] and "EXPIRES IN" in rows[0]
    assert rows[1].split()[-2:] == ["10.1.2.3", "3d"]
    assert rows[2].split()[-1] == "10.1.2.4"


def test_get_clients_from_an_api_without_hygiene_fields_shows_no_empty_columns(run: Run, api: FakeApi) -> None:
    api.clients = [{"clientId": "client-0", "liveness": "alive", "runtimes": [], "datasets": []}]
    header = run("get", "clients").output.splitlines()[0]
    assert "SOURCE" not in header and "EXPIRES" not in header


def test_get_clients_alive_asks_for_live_clients_only(run: Run, api: FakeApi) -> None:
    run("get", "clients", "--alive")
    assert api.sent("GET") == ["/api/v1/clients?includeLost=false"]


def test_get_namespaces(run: Run) -> None:
    result = run("get", "namespaces")
    assert result.output.split() == ["NAMESPACE", "default"]


def test_an_unwritable_download_target_is_one_error_line(run: Run, api: FakeApi, tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x" * 100)
    run("create", "model", "m", "--runtime", "pytorch", "-f", str(weights))
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("download", "model", "m", "-f", str(blocker / "sub" / "m.safetensors"))
    assert_user_error(result, 1, str(blocker))
