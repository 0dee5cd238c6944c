"""The local platform with real processes: launch, certificates, exit codes, stop, adoption after a restart, removal."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from job_scheduler.coordinator_certificates import CoordinatorIssuer
from job_scheduler.local_platform import LocalPlatform, tail
from job_scheduler.platform import CoordinatorInfo, LaunchRequest, coordinator_name
from libs.jobspec import JobSpec
from libs.pki.authority import identity_of, utcnow
from tests.fixtures.pki import TestPki
from tests.unit.job_scheduler.fakes import issuer_of

ROOT = Path(__file__).resolve().parents[3]
FAKE = "tests.unit.job_scheduler.fake_coordinator"


@pytest.fixture
def issuer(test_pki: TestPki) -> CoordinatorIssuer:
    return issuer_of(test_pki)


def platform_in(tmp_path: Path, issuer: CoordinatorIssuer | None) -> LocalPlatform:
    return LocalPlatform(tmp_path / "jobs", certificates=issuer, python=sys.executable, module=FAKE,
                         environment={**os.environ, "PYTHONPATH": str(ROOT)})


def request(tmp_path: Path, name: str, launch: int = 1, rounds: int = 3, **fake: Any) -> LaunchRequest:
    fake.setdefault("launchesFile", str(tmp_path / "launches.txt"))
    spec = JobSpec.parse({"name": name, "namespace": "ns", "runtime": "pytorch", "taskEntry": "train",
                          "rounds": rounds, "roundTimeoutSeconds": 600, "parameters": {"fake": fake}})
    return LaunchRequest("ns", name, spec, launch, "secret-token", "127.0.0.1:1", "127.0.0.1:2",
                         "sqlite:///x.db", "file:///x")


async def until(what: str, check: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def ended(platform: LocalPlatform, name: str) -> CoordinatorInfo:
    async def check() -> CoordinatorInfo | None:
        info = await platform.find("ns", name)
        return info if info is not None and not info.running else None

    result: CoordinatorInfo = await until(f"{name} to end", check)
    return result


def launches(tmp_path: Path) -> list[str]:
    path = tmp_path / "launches.txt"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_coordinator_runs_as_a_subprocess_with_its_log_and_exit_code(
    tmp_path: Path, issuer: CoordinatorIssuer
) -> None:
    platform = platform_in(tmp_path, issuer)
    assert await platform.find("ns", "ok") is None
    launched = await platform.launch(request(tmp_path, "ok", exit=0))
    assert launched.name == "coord-ns-ok" and not launched.adopted
    info = await ended(platform, "ok")
    assert (info.exit_code, info.launch, info.status["state"]) == (0, 1, "FINISHED")
    workdir = tmp_path / "jobs" / "ns" / "ok"
    assert json.loads((workdir / "coordinator.exit").read_text())["code"] == 0
    log = await platform.logs("ns", "ok", 50)
    assert "--- launch 1 of coord-ns-ok" in log and "fake coordinator exits with 0" in log
    assert "secret-token" not in log + (workdir / "coordinator.pid").read_text()
    await platform.launch(request(tmp_path, "ok", launch=2, exit=7))
    info = await ended(platform, "ok")
    assert (info.exit_code, info.launch) == (7, 2)
    assert "--- launch 2" in await platform.logs("ns", "ok", 3), "the log is appended across launches"


async def test_stop_asks_for_a_safe_stop_and_kill_ends_it_at_once(
    tmp_path: Path, issuer: CoordinatorIssuer
) -> None:
    platform = platform_in(tmp_path, issuer)
    await platform.launch(request(tmp_path, "slow", holdSeconds=60))
    await platform.launch(request(tmp_path, "stuck", holdSeconds=60))
    await until("both running", lambda: _both_wrote_status(tmp_path, "slow", "stuck"))
    assert await platform.stop("ns", "slow")
    info = await ended(platform, "slow")
    assert (info.exit_code, info.status["state"]) == (3, "STOPPED")
    assert await platform.kill("ns", "stuck")
    assert (await ended(platform, "stuck")).exit_code == -signal.SIGKILL
    assert not await platform.stop("ns", "stuck"), "nothing left to stop"


async def _both_wrote_status(tmp_path: Path, *names: str) -> bool:
    return all((tmp_path / "jobs" / "ns" / n / "status.json").exists() for n in names)


async def test_a_new_platform_adopts_a_live_coordinator_instead_of_launching_a_twin(
    tmp_path: Path, issuer: CoordinatorIssuer
) -> None:
    first = platform_in(tmp_path, issuer)
    await first.launch(request(tmp_path, "job", holdSeconds=60))
    second = platform_in(tmp_path, issuer)  # as after a scheduler restart: not the coordinator's parent
    info = await second.find("ns", "job")
    assert info is not None and info.running and info.launch == 1
    adopted = await second.launch(request(tmp_path, "job"))
    assert adopted.adopted
    await until("the start line", lambda: _has_lines(tmp_path, 1))
    assert await second.stop("ns", "job")
    info = await ended(second, "job")
    assert info.exit_code == 3, "read from status.json, since this platform cannot wait for it"
    assert launches(tmp_path) == ["ns/job"]
    await first.close()


async def _has_lines(tmp_path: Path, count: int) -> bool:
    return len(launches(tmp_path)) >= count


async def test_a_crash_without_a_final_status_has_no_exit_code_for_a_stranger(
    tmp_path: Path, issuer: CoordinatorIssuer
) -> None:
    first = platform_in(tmp_path, issuer)
    await first.launch(request(tmp_path, "crash", holdSeconds=60))
    await until("running", lambda: _both_wrote_status(tmp_path, "crash"))
    second = platform_in(tmp_path, issuer)
    assert await second.kill("ns", "crash")
    info = await ended(second, "crash")
    assert info.exit_code is None and info.status["state"] == "RUNNING"
    await first.close()


async def test_remove_kills_what_runs_and_deletes_the_work_directory(
    tmp_path: Path, issuer: CoordinatorIssuer
) -> None:
    platform = platform_in(tmp_path, issuer)
    await platform.launch(request(tmp_path, "gone", holdSeconds=60))
    await platform.remove("ns", "gone")
    assert not (tmp_path / "jobs" / "ns").exists()
    assert await platform.find("ns", "gone") is None
    assert await platform.logs("ns", "gone", 10) == ""


async def test_each_launch_gets_its_own_certificate_of_exactly_its_job_in_private_files(
    tmp_path: Path, issuer: CoordinatorIssuer, test_pki: TestPki
) -> None:
    platform = platform_in(tmp_path, issuer)
    await platform.launch(request(tmp_path, "certified", rounds=3, exit=0))
    info = await ended(platform, "certified")
    tls = tmp_path / "jobs" / "ns" / "certified" / "tls"
    assert info.status["wire"] == {
        "NSFL_COORDINATOR_TLS_CA": str(test_pki.directory.ca),
        "NSFL_COORDINATOR_TLS_CERT": str(tls / "cert.pem"),
        "NSFL_COORDINATOR_TLS_KEY": str(tls / "key.pem"),
        "NSFL_COORDINATOR_TLS_CRL": str(test_pki.directory.crl),
        "NSFL_COORDINATOR_TRUST_DOMAIN": "nsfl.local",
    }
    assert stat.S_IMODE((tls / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    first = x509.load_pem_x509_certificate((tls / "cert.pem").read_bytes())
    assert identity_of(first).uri == "spiffe://nsfl.local/coordinator/ns/certified"
    names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "certified.ns.coordinator.nsfl.local" in names.get_values_for_type(x509.DNSName)
    lifetime = dt.timedelta(seconds=3 * 600) + dt.timedelta(days=1)
    assert abs(first.not_valid_after_utc - (utcnow() + lifetime)) < dt.timedelta(minutes=2), (
        "it lasts the job's longest life (rounds x roundTimeoutSeconds) plus a day, no longer"
    )

    await platform.launch(request(tmp_path, "certified", launch=2, exit=0))
    await ended(platform, "certified")
    second = x509.load_pem_x509_certificate((tls / "cert.pem").read_bytes())
    assert second.serial_number != first.serial_number, "a relaunch gets a fresh certificate"


async def test_an_insecure_scheduler_tells_its_coordinators_plaintext_and_issues_nothing(tmp_path: Path) -> None:
    stale = {"NSFL_COORDINATOR_TLS_CERT": "/somewhere/else.pem"}
    platform = LocalPlatform(tmp_path / "jobs", certificates=None, python=sys.executable, module=FAKE,
                             environment={**os.environ, "PYTHONPATH": str(ROOT), **stale})
    await platform.launch(request(tmp_path, "plain", exit=0))
    info = await ended(platform, "plain")
    assert info.status["wire"] == {"NSFL_COORDINATOR_INSECURE": "true"}
    assert not (tmp_path / "jobs" / "ns" / "plain" / "tls").exists()


def test_tail_reads_only_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail(path, 2) == "line 99998\nline 99999"
    assert tail(path, 0) == "" and tail(tmp_path / "none", 5) == ""


@pytest.mark.parametrize(("namespace", "name"), [("ns", "a" * 63), ("n" * 63, "b" * 63)])
def test_long_coordinator_names_stay_dns_labels_and_distinct(namespace: str, name: str) -> None:
    result = coordinator_name(namespace, name)
    assert len(result) <= 63 and result.startswith("coord-") and not result.endswith("-")
    assert result != coordinator_name(namespace, name[:-1] + "z")
