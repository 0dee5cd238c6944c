"""The local platform's standby coordinator: started ahead, handed the job, replaced, stopped unused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import psutil

from job_scheduler.coordinator_standby import STANDBY_LOG
from job_scheduler.local_platform import LocalPlatform
from tests.fixtures.pki import TestPki
from tests.unit.job_scheduler.fakes import issuer_of
from tests.unit.job_scheduler.test_local_platform import FAKE, ROOT, ended, launches, request, until

STANDBY = "coordinator.standby"


def platform_with_standby(tmp_path: Path, pki: TestPki, delay: float = 0.0) -> LocalPlatform:
    return LocalPlatform(tmp_path / "jobs", certificates=issuer_of(pki), python=sys.executable, module=FAKE,
                         standby_module=STANDBY,
                         environment={**os.environ, "PYTHONPATH": str(ROOT)}, standby_delay_seconds=delay)


async def standby_ready(tmp_path: Path, count: int = 1) -> bool:
    log = tmp_path / "jobs" / STANDBY_LOG
    return log.exists() and log.read_text().count("waiting for a job") >= count


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_a_launch_hands_the_job_to_the_standby_and_starts_the_next_one(
    tmp_path: Path, test_pki: TestPki
) -> None:
    platform = platform_with_standby(tmp_path, test_pki)
    platform.start_standby()
    await until("the standby to import", lambda: standby_ready(tmp_path))
    first = platform._standby
    assert first is not None

    launched = await platform.launch(request(tmp_path, "warm", exit=0))

    assert not launched.adopted
    workdir = tmp_path / "jobs" / "ns" / "warm"
    assert json.loads((workdir / "coordinator.pid").read_text())["pid"] == first.pid
    info = await ended(platform, "warm")
    assert (info.exit_code, info.status["state"]) == (0, "FINISHED")
    tls = workdir / "tls"
    assert info.status["wire"]["NSFL_COORDINATOR_TLS_CERT"] == str(tls / "cert.pem"), "handed over with the job"
    assert info.status["wire"]["NSFL_COORDINATOR_TLS_KEY"] == str(tls / "key.pem") and (tls / "key.pem").exists()
    assert "fake coordinator exits with 0" in await platform.logs("ns", "warm", 20)
    assert launches(tmp_path) == ["ns/warm"]
    second = platform._standby
    assert second is not None and second.pid != first.pid and second.alive()
    await platform.close()
    assert gone(second.pid), "an unused standby ends with its platform"


async def test_the_job_lock_is_held_across_the_handoff_and_a_dead_standby_means_a_cold_launch(
    tmp_path: Path, test_pki: TestPki
) -> None:
    platform = platform_with_standby(tmp_path, test_pki)
    platform.start_standby()
    await until("the standby to import", lambda: standby_ready(tmp_path))
    assert platform._standby is not None
    held = await platform.launch(request(tmp_path, "held", holdSeconds=60))
    assert not held.adopted
    info = await platform.find("ns", "held")
    assert info is not None and info.running
    assert (await platform.launch(request(tmp_path, "held", launch=2))).adopted, "never a twin"

    await until("the next standby", lambda: standby_ready(tmp_path, 2))
    replacement = platform._standby
    assert replacement is not None
    os.kill(replacement.pid, signal.SIGKILL)
    await until("the standby to die", lambda: asyncio.sleep(0, gone(replacement.pid)))
    await platform.launch(request(tmp_path, "cold", exit=0))
    assert json.loads((tmp_path / "jobs" / "ns" / "cold" / "coordinator.pid").read_text())["pid"] != replacement.pid
    assert (await ended(platform, "cold")).exit_code == 0

    assert await platform.stop("ns", "held")
    assert (await ended(platform, "held")).exit_code == 3
    await platform.close()


async def test_the_next_standby_starts_only_after_the_delay_so_the_new_job_has_the_cpu(
    tmp_path: Path, test_pki: TestPki
) -> None:
    platform = platform_with_standby(tmp_path, test_pki, delay=1.5)
    platform.start_standby()
    await until("the standby to import", lambda: standby_ready(tmp_path))
    first = platform._standby
    assert first is not None

    await platform.launch(request(tmp_path, "held", holdSeconds=60))
    assert platform._standby is None, "no standby importing beside the job just handed over"
    await asyncio.sleep(0.5)
    assert platform._standby is None
    await until("the next standby", lambda: standby_ready(tmp_path, 2))
    second = platform._standby
    assert second is not None and second.pid != first.pid

    assert await platform.stop("ns", "held")
    assert (await ended(platform, "held")).exit_code == 3
    await platform.close()
    assert gone(second.pid)


async def test_a_platform_closed_before_the_delay_starts_no_standby(tmp_path: Path, test_pki: TestPki) -> None:
    platform = platform_with_standby(tmp_path, test_pki, delay=0.5)
    platform.start_standby()
    await until("the standby to import", lambda: standby_ready(tmp_path))
    await platform.launch(request(tmp_path, "quick", exit=0))
    assert (await ended(platform, "quick")).exit_code == 0
    await platform.close()
    await asyncio.sleep(1.0)
    assert platform._standby is None
    assert (tmp_path / "jobs" / STANDBY_LOG).read_text().count("waiting for a job") == 1
