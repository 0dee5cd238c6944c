"""The plan of the standalone control plane: each component's command line and environment.

Pure functions from a state directory, ports and addresses to
:class:`Component` values; ``standalone`` runs them.  Kept apart so the
exact variables each component gets (the contract with their settings
loaders, which refuse unknown ``NSFL_<COMPONENT>_*`` names) are in one
place and testable without starting anything.

Every component gets the same store URLs: the SQLite file
``<state>/nsfl.db`` and the object root ``<state>/objects``, so the API
server reads the jobs the scheduler writes, and the coordinators (started
by the scheduler with its URLs) write where both look.

Every component also gets its mutual TLS files from the state directory's
PKI (``<state>/pki``, made by ``standalone``): ``NSFL_<C>_TLS_CA``,
``_TLS_CERT``, ``_TLS_KEY``, ``_TLS_CRL`` and ``_TRUST_DOMAIN`` for its
control-plane identity.  The scheduler also gets the issuing CA
(``NSFL_SCHEDULER_COORDINATOR_ISSUER_CERT``/``_KEY``) to sign each
coordinator's certificate at launch, and the API server the PKI directory
(``NSFL_API_PKI_DIR``) to sign enrolment requests and revoke clients.  There
is no plaintext plan: a standalone plane always runs with mutual TLS.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from libs.pki.directory import PkiDirectory
from libs.pki.identity import Identity

HOST = "127.0.0.1"
TOKEN_FILE = "tokens.yaml"
PKI_DIR = "pki"
DEFAULT_API_PORT = 8080
DEFAULT_SELECTOR_PORT = 50051
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Modules:
    """The ``python -m`` module of each component (tests substitute stand-ins)."""

    selector: str = "client_selector"
    scheduler: str = "job_scheduler"
    api: str = "api_server"


@dataclass(frozen=True)
class Ports:
    api: int = DEFAULT_API_PORT
    selector: int = DEFAULT_SELECTOR_PORT
    scheduler: int = 0


@dataclass(frozen=True)
class PlaneTls:
    """The PKI directory the plane's certificates are in, and its trust domain."""

    root: Path
    trust_domain: str

    def environment(self, prefix: str, control_name: str) -> dict[str, str]:
        """``<prefix>TLS_CA``... for the control-plane identity ``control_name``."""
        directory = PkiDirectory(self.root.resolve())
        files = directory.issued(Identity.control(control_name, self.trust_domain))
        return {
            f"{prefix}TLS_CA": str(files.ca), f"{prefix}TLS_CERT": str(files.cert),
            f"{prefix}TLS_KEY": str(files.key), f"{prefix}TLS_CRL": str(directory.crl),
            f"{prefix}TRUST_DOMAIN": self.trust_domain,
        }  # fmt: skip


def plane_tls(state_dir: Path, trust_domain: str) -> PlaneTls:
    return PlaneTls(state_dir / PKI_DIR, trust_domain)


@dataclass(frozen=True)
class Component:
    """One process of the plan: how to start it and where it reports."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port_file: Path
    log_file: Path


def store_urls(state_dir: Path) -> tuple[str, str]:
    """The SQLite store and object store URLs every component of ``state_dir`` shares."""
    root = state_dir.resolve()
    return "sqlite://" + quote(str(root / "nsfl.db")), "file://" + quote(str(root / "objects"))


def base_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The components' environment: ours, with this checkout importable first."""
    result = dict(env)
    if (REPO_ROOT / "pyproject.toml").exists():
        result["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return result


def _component(state_dir: Path, name: str, argv: list[str], env: dict[str, str]) -> Component:
    port_file = state_dir / "run" / f"{name}.port"
    return Component(
        name, [*argv, "--port-file", str(port_file)], env, port_file, state_dir / "logs" / f"{name}.log"
    )


def selector_component(
    state_dir: Path, port: int, modules: Modules, env: Mapping[str, str], tls: PlaneTls
) -> Component:
    store, _ = store_urls(state_dir)
    variables = {
        "NSFL_SELECTOR_STATE_DIR": str(state_dir.resolve()), "NSFL_SELECTOR_STORE_URL": store,
        **tls.environment("NSFL_SELECTOR_", "selector"),
    }  # fmt: skip
    argv = python_command(modules.selector, "--listen", f"{HOST}:{port}")
    return _component(state_dir, "selector", argv, {**base_environment(env), **variables})


def scheduler_component(
    state_dir: Path, port: int, selector: str, modules: Modules, env: Mapping[str, str], tls: PlaneTls
) -> Component:
    store, objects = store_urls(state_dir)
    pki = PkiDirectory(tls.root.resolve())
    variables = {
        "NSFL_SCHEDULER_STATE_DIR": str(state_dir.resolve()), "NSFL_SCHEDULER_STORE_URL": store,
        "NSFL_SCHEDULER_OBJECT_STORE_URL": objects, "NSFL_SCHEDULER_SELECTOR": selector,
        "NSFL_SCHEDULER_PLATFORM": "local",
        **tls.environment("NSFL_SCHEDULER_", "scheduler"),
        "NSFL_SCHEDULER_COORDINATOR_ISSUER_CERT": str(pki.issuer),
        "NSFL_SCHEDULER_COORDINATOR_ISSUER_KEY": str(pki.issuer_key),
    }  # fmt: skip
    argv = python_command(modules.scheduler, "--listen", f"{HOST}:{port}")
    return _component(state_dir, "scheduler", argv, {**base_environment(env), **variables})


def api_component(
    state_dir: Path,
    port: int,
    *,
    scheduler: str,
    selector: str,
    modules: Modules,
    env: Mapping[str, str],
    tls: PlaneTls,
) -> Component:
    store, objects = store_urls(state_dir)
    variables = {
        "NSFL_API_LISTEN": f"{HOST}:{port}", "NSFL_API_STATE_DIR": str(state_dir.resolve()),
        "NSFL_API_STORE_URL": store, "NSFL_API_OBJECT_STORE_URL": objects,
        "NSFL_API_SCHEDULER_ADDRESS": scheduler, "NSFL_API_SELECTOR_ADDRESS": selector,
        "NSFL_API_TOKEN_FILE": str((state_dir / TOKEN_FILE).resolve()),
        **tls.environment("NSFL_API_", "api-server"), "NSFL_API_PKI_DIR": str(tls.root.resolve()),
    }  # fmt: skip
    return _component(state_dir, "api", python_command(modules.api), {**base_environment(env), **variables})


def python_command(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]
