"""Contract: the Dockerfiles, the systemd unit, the example client config and the deploy guide.

No image can be built here (no Docker engine), so the Dockerfiles are read,
not built: non-root user, the base image, the right extras, and COPY sources
that exist.  The unit is read as the INI file systemd reads; the example
client.yaml is loaded by the task manager's own settings loader.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from libs.settings import load_settings
from task_manager.settings import PREFIX, TaskManagerSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = ("control-plane", "coordinator")
UNIT = DEPLOY / "systemd" / "nsfl-task-manager.service"
CLIENT_EXAMPLE = DEPLOY / "systemd" / "client.example.yaml"


def instructions(name: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (DEPLOY / "docker" / f"Dockerfile.{name}").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def final_stage(name: str) -> list[str]:
    lines = instructions(name)
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_as_user_10001_on_python_3_11_slim(name: str) -> None:
    lines = instructions(name)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in lines
    assert all(line.startswith("FROM ${PYTHON_IMAGE}") for line in lines if line.startswith("FROM "))
    final = final_stage(name)
    assert [line for line in final if line.startswith("USER ")] == ["USER 10001:10001"]
    assert any("useradd" in line and "--uid 10001" in line for line in final)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_path_exists_and_the_context_is_filtered(name: str) -> None:
    for line in instructions(name):
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile.{name} copies {source}, which does not exist"
    ignore = (DEPLOY / "docker" / f"Dockerfile.{name}.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :], "the ignore file lets the packages in after excluding everything"


def test_the_control_plane_installs_the_k8s_extra_and_no_ml_framework() -> None:
    runs = " ".join(line for line in instructions("control-plane") if line.startswith("RUN "))
    assert '".[k8s]"' in runs and '"nsfl[k8s]"' in runs
    assert not re.search(r"torch|tensorflow", runs)


def test_the_coordinator_installs_no_extra_at_all() -> None:
    runs = " ".join(line for line in instructions("coordinator") if line.startswith("RUN "))
    assert "pip wheel --wheel-dir /wheels ." in runs
    assert "[" not in runs.replace("--mount=type=bind", ""), "the coordinator needs no extra (no torch)"
    assert 'ENTRYPOINT ["python", "-m", "coordinator"]' in final_stage("coordinator")


class UnitFile(configparser.RawConfigParser):
    """A systemd unit as an INI file: keys keep their case (``ExecStart``, not ``execstart``)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def unit() -> UnitFile:
    parser = UnitFile(strict=False, delimiters=("=",), comment_prefixes=("#", ";"))
    parser.read(UNIT)
    return parser


def test_the_task_manager_unit_is_hardened_and_kills_every_executor_with_it() -> None:
    service = unit()["Service"]
    expected = {
        "User": "nsfl",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "KillMode": "control-group",
        "ReadWritePaths": "/var/lib/nsfl",
        "CapabilityBoundingSet": "",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert service["ExecStart"].split()[1:] == ["-m", "task_manager", "--config", "/etc/nsfl/client.yaml",
                                                "--log-json"]  # fmt: skip
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_example_client_config_loads_and_keeps_its_workspace_writable() -> None:
    settings = load_settings(TaskManagerSettings, prefix=PREFIX, file=CLIENT_EXAMPLE, env={})
    writable = Path(unit()["Service"]["ReadWritePaths"])
    assert settings.workspace.is_relative_to(writable)
    assert "digits-pytorch" in settings.task_entries and "digits" in settings.datasets


def test_the_deploy_guide_walks_through_install_first_job_watching_clients_and_uninstall() -> None:
    guide = (DEPLOY / "README.md").read_text()
    for command in (
        "kubectl apply -k deploy/kubernetes/overlays/dev",
        "docker build -f deploy/docker/Dockerfile.control-plane",
        "docker build -f deploy/docker/Dockerfile.coordinator",
        "kubectl apply -f examples/k8s/fljob-digits.yaml",
        "kubectl get fljobs -w",
        "systemctl enable --now nsfl-task-manager",
        "kubectl delete -k deploy/kubernetes/overlays/dev",
        "python -m libs.k8s.crd --write",
    ):
        assert command in guide, command
