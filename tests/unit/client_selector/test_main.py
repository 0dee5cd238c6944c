"""``python -m client_selector`` as a process: it serves mTLS, reports its port, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from libs.protos import selector_pb2
from tests.fixtures.pki import TestPki
from tests.unit.client_selector.fakes import callers

ROOT = Path(__file__).resolve().parents[3]


def environment(tmp_path: Path, pki: TestPki | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NSFL_")}
    env["NSFL_SELECTOR_STATE_DIR"] = str(tmp_path / "state")
    env["PYTHONPATH"] = str(ROOT)
    if pki is not None:
        env |= pki.env("NSFL_SELECTOR_", pki.identity("selector"))
    return env


def read_if_present(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


async def wait_for_file(path: Path, process: asyncio.subprocess.Process, within: float = 15.0) -> str:
    for _ in range(int(within / 0.05)):
        text = read_if_present(path)
        if text:  # written atomically, so any content is the whole port
            return text
        if process.returncode is not None:
            raise AssertionError(f"the selector exited early with {process.returncode}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"no port file within {within}s")


async def test_the_selector_process_serves_on_the_port_it_reports_and_stops_on_sigterm(
    tmp_path: Path, test_pki: TestPki
) -> None:
    port_file = tmp_path / "selector.port"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client_selector",
        "--listen",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
        env=environment(tmp_path, test_pki),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        port = int(await wait_for_file(port_file, process))
        async with callers(test_pki, port) as plane:
            listed = await plane.ListClients(selector_pb2.ListClientsRequest())
        assert list(listed.clients) == []
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert "stopping the client selector" in stderr.decode()
    assert not port_file.exists(), "a stopped selector leaves no port file"
    assert (tmp_path / "state" / "selector.db").exists()


def test_a_bad_setting_prints_an_error_line_and_exits_with_the_usage_code(tmp_path: Path) -> None:
    env = environment(tmp_path) | {"NSFL_SELECTOR_HEARTBEAT_TIMEOUT_SECONDS": "soon"}
    result = subprocess.run(
        [sys.executable, "-m", "client_selector"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: setting 'heartbeat_timeout_seconds' must be a number")
    assert "Traceback" not in result.stderr


def test_a_selector_without_tls_files_exits_with_the_error_that_says_how_to_fix_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client_selector"],
        env=environment(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: mutual TLS is required: give 'tls_ca', 'tls_cert' and 'tls_key'")
    assert "nsfl-ctl pki" in result.stderr and "Traceback" not in result.stderr
