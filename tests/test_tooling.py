"""The house tooling runs as part of the suite: ruff, mypy and the import-layer contracts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["libs", "api_server", "job_scheduler", "client_selector", "coordinator",
            "task_manager", "task_executor", "nsfl_ctl"]


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed in this environment: install the 'test' extra")
    return found


def test_ruff_finds_nothing() -> None:
    result = _run(_tool("ruff"), "check", *PACKAGES, "tests", "bench", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = _run(sys.executable, "-m", "mypy", *PACKAGES)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_import_layers_hold() -> None:
    result = _run(_tool("lint-imports"))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("```bash")
    commands = readme[start + 1: readme.index("```", start + 1)]
    assert len(commands) == 2, "the README's first code block holds exactly two commands"
    assert "demo" in commands[0] and "pytest" in commands[1]
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_no_unsafe_deserialisation_in_the_product() -> None:
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for needle in ("pickle.load", "allow_pickle=True", "yaml.load(", "import pickle"):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
            if "torch.load(" in text and "weights_only=True" not in text:
                offenders.append(f"{path.relative_to(ROOT)}: torch.load without weights_only")
    assert offenders == []
