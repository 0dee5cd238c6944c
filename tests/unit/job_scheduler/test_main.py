"""``python -m job_scheduler`` as a process, and its settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job_scheduler.settings import PREFIX, SchedulerSettings, load
from libs.errors import InvalidSetting, UnknownSetting
from tests.fixtures.pki import TestPki
from tests.unit.job_scheduler.fakes import scheduler_wire

ROOT = Path(__file__).resolve().parents[3]


def wire_variables(pki: TestPki) -> dict[str, str]:
    """A scheduler's TLS files and coordinators' issuing CA, as ``NSFL_SCHEDULER_*`` variables."""
    return {f"{PREFIX}{key.upper()}": str(value) for key, value in scheduler_wire(pki).items()}


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NSFL_")}
    return {**env, "PYTHONPATH": str(ROOT), "NSFL_SCHEDULER_STATE_DIR": str(tmp_path / "state"), **extra}


def test_the_process_reports_its_port_and_stops_cleanly_on_sigterm(tmp_path: Path, test_pki: TestPki) -> None:
    port_file = tmp_path / "scheduler.port"
    process = subprocess.Popen(
        [sys.executable, "-m", "job_scheduler", "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
        cwd=ROOT, env=environment(tmp_path, **wire_variables(test_pki)), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "the scheduler exited early"
            assert time.monotonic() < deadline, "no port file"
            time.sleep(0.05)
        assert int(port_file.read_text()) > 0
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.decode()
    assert "stopping the job scheduler" in stderr.decode()
    assert not port_file.exists()
    assert (tmp_path / "state" / "nsfl.db").exists()


def test_a_bad_setting_prints_an_error_line_and_exits_with_the_usage_code(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "job_scheduler"], cwd=ROOT, capture_output=True, text=True,
                            env=environment(tmp_path, NSFL_SCHEDULER_MAX_RUNNING_JOBS="many"), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: setting 'max_running_jobs' must be an integer, got 'many'"


def test_settings_default_to_files_under_the_state_dir(tmp_path: Path, test_pki: TestPki) -> None:
    settings = load(env={"NSFL_SCHEDULER_STATE_DIR": str(tmp_path), **wire_variables(test_pki)})
    assert settings.resolved_store_url == f"sqlite://{tmp_path}/nsfl.db"
    assert settings.resolved_object_store_url == f"file://{tmp_path}/objects"
    assert settings.jobs_dir == tmp_path / "jobs"
    assert (settings.listen, settings.max_running_jobs, settings.max_running_per_namespace) == (
        "127.0.0.1:50052", 4, 2)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"listen": "nowhere"}, "host:port"),
        ({"platform": "mainframe"}, "one of local"),
        ({"max_running_per_namespace": "0"}, "at least 1"),
        ({"admission_interval_seconds": "-1"}, "positive number of seconds"),
    ],
)
def test_invalid_settings_are_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        load(overrides=values)


def test_an_unknown_variable_is_an_error_not_a_default() -> None:
    with pytest.raises(UnknownSetting, match="did you mean 'max_running_jobs'"):
        load(env={"NSFL_SCHEDULER_MAX_RUNNING_JOB": "3"})
    assert SchedulerSettings().coordinator_module == "coordinator"


def test_the_scheduler_needs_mutual_tls_and_the_ca_it_signs_coordinators_with(test_pki: TestPki) -> None:
    wire = scheduler_wire(test_pki)
    SchedulerSettings(**wire).validate()
    with pytest.raises(InvalidSetting, match="mutual TLS is required"):
        SchedulerSettings().validate()
    without_issuer = {k: v for k, v in wire.items() if not k.startswith("coordinator_issuer")}
    with pytest.raises(InvalidSetting, match="signs each coordinator's certificate.*issuer-key.pem"):
        SchedulerSettings(**without_issuer).validate()
    with pytest.raises(InvalidSetting, match="give both or neither"):
        SchedulerSettings(**{**without_issuer, "coordinator_issuer_cert": wire["coordinator_issuer_cert"]}).validate()
    SchedulerSettings(insecure=True).validate()  # loopback tests only: coordinators run in plaintext too
    for far in ({"listen": "0.0.0.0:50052"}, {"selector": "selector.example.com:50051"},
                {"coordinator_listen_host": "10.0.0.5"}):
        with pytest.raises(InvalidSetting, match="only on loopback"):
            SchedulerSettings(insecure=True, **far).validate()  # type: ignore[arg-type]
