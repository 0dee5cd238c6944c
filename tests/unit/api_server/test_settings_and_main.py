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
from tests.unit.api_server.conftest import write_token_file

ROOT = Path(__file__).resolve().parents[3]


def test_settings_come_from_the_environment_and_are_checked(tmp_path: Path) -> None:
    env = {"NSFL_API_TOKEN_FILE": str(tmp_path / "t.yaml"), "NSFL_API_MAX_BODY_BYTES": "2048",
           "NSFL_API_LISTEN": "0.0.0.0:9000"}  # fmt: skip
    settings = load(env=env)
    assert settings.max_body_bytes == 2048 and settings.listen_port == 9000
    assert settings.max_model_bytes == 4096 * MIB
    with pytest.raises(UnknownSetting, match="NSFL_API_MAX_BODY"):
        load(env={**env, "NSFL_API_MAX_BODY": "1"})
    with pytest.raises(InvalidSetting, match="token_file"):
        load(env={})
    with pytest.raises(InvalidSetting, match="listen"):
        load(env={**env, "NSFL_API_LISTEN": "nowhere"})
    with pytest.raises(InvalidSetting, match="tls"):
        load(env={**env, "NSFL_API_TLS_CA": "/ca.pem"})


def test_a_bad_token_file_stops_the_process_with_an_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.yaml"
    bad.write_text("tokens: [{token: short, namespaces: [a], role: viewer}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "api_server"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "NSFL_API_TOKEN_FILE": str(bad), "NSFL_API_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert "Error: " in result.stderr and "tokens[0]" in result.stderr and "Traceback" not in result.stderr


def test_the_server_process_serves_writes_its_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "api.port"
    env = {**os.environ, "NSFL_API_TOKEN_FILE": str(write_token_file(tmp_path / "tokens.yaml")),
           "NSFL_API_STATE_DIR": str(tmp_path / "state"), "NSFL_API_LISTEN": "127.0.0.1:0"}  # fmt: skip
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
