"""Settings are strict, and ``python -m api_server`` starts, writes its port and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from api_server.settings import MIB, load
from libs.errors import InvalidSetting, UnknownSetting
from tests.fixtures.pki import TestPki
from tests.unit.api_server.conftest import write_token_file

ROOT = Path(__file__).resolve().parents[3]


def api_server_env(pki: TestPki) -> dict[str, str]:
    """The mutual-TLS settings of the API server (its gRPC links), as NSFL_API_* variables."""
    return pki.env("NSFL_API_", pki.identity("api-server"))


def test_settings_come_from_the_environment_and_are_checked(tmp_path: Path, test_pki: TestPki) -> None:
    env = {"NSFL_API_TOKEN_FILE": str(tmp_path / "t.yaml"), "NSFL_API_MAX_BODY_BYTES": "2048",
           "NSFL_API_LISTEN": "0.0.0.0:9000", "NSFL_API_PKI_DIR": str(test_pki.directory.root),
           **api_server_env(test_pki)}  # fmt: skip
    settings = load(env=env)
    assert settings.max_body_bytes == 2048 and settings.listen_port == 9000
    assert settings.max_model_bytes == 4096 * MIB
    assert settings.tls is not None and settings.pki_dir == test_pki.directory.root
    with pytest.raises(UnknownSetting, match="NSFL_API_MAX_BODY"):
        load(env={**env, "NSFL_API_MAX_BODY": "1"})
    with pytest.raises(InvalidSetting, match="token_file"):
        load(env={})
    with pytest.raises(InvalidSetting, match="listen"):
        load(env={**env, "NSFL_API_LISTEN": "nowhere"})
    partial = {k: v for k, v in env.items() if k not in ("NSFL_API_TLS_CERT", "NSFL_API_TLS_KEY")}
    with pytest.raises(InvalidSetting, match="go together"):
        load(env=partial)


def test_the_grpc_links_need_mutual_tls_or_insecure_on_loopback_only(tmp_path: Path) -> None:
    env = {"NSFL_API_TOKEN_FILE": str(tmp_path / "t.yaml"), "NSFL_API_LISTEN": "0.0.0.0:9000"}
    with pytest.raises(InvalidSetting, match="mutual TLS is required"):
        load(env=env)
    # The REST listener is HTTP and not the wire's business: 0.0.0.0 is fine with insecure loopback links.
    assert load(env={**env, "NSFL_API_INSECURE": "true"}).insecure
    remote = {**env, "NSFL_API_INSECURE": "true", "NSFL_API_SCHEDULER_ADDRESS": "scheduler.example:50052"}
    with pytest.raises(InvalidSetting, match="scheduler.example:50052"):
        load(env=remote)


def test_a_bad_token_file_stops_the_process_with_an_error_line(tmp_path: Path, test_pki: TestPki) -> None:
    bad = tmp_path / "tokens.yaml"
    bad.write_text("tokens: [{token: short, namespaces: [a], role: viewer}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "api_server"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "NSFL_API_TOKEN_FILE": str(bad), "NSFL_API_STATE_DIR": str(tmp_path),
             **api_server_env(test_pki)},
    )  # fmt: skip
    assert result.returncode == 2
    assert "Error: " in result.stderr and "tokens[0]" in result.stderr and "Traceback" not in result.stderr


def test_the_server_process_serves_writes_its_port_and_stops_on_sigterm(
    tmp_path: Path, test_pki: TestPki
) -> None:
    port_file = tmp_path / "api.port"
    env = {**os.environ, "NSFL_API_TOKEN_FILE": str(write_token_file(tmp_path / "tokens.yaml")),
           "NSFL_API_STATE_DIR": str(tmp_path / "state"), "NSFL_API_LISTEN": "127.0.0.1:0",
           "NSFL_API_PKI_DIR": str(test_pki.directory.root), **api_server_env(test_pki)}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "api_server", "--port-file", str(port_file)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "no port file"
            time.sleep(0.05)
        port = int(port_file.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not port_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
