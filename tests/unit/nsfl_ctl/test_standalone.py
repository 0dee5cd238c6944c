"""The standalone launcher, run with stand-in components, and its plan checked against the real settings.

The stand-ins (``fake_component``) take the real command lines and
environment, so these tests run the real spawning, port files, readiness
wait, record, ``status`` and ``down``; the end-to-end run with the real
selector, scheduler and API server is the e2e suite's.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from libs.errors import Unavailable
from libs.pki.authority import identity_of, load_certificates
from libs.pki.directory import PkiDirectory
from nsfl_ctl import control_plane_plan as plan
from nsfl_ctl import pki, processes, standalone
from tests.unit.nsfl_ctl.conftest import assert_user_error, invoke

FAKE = "tests.unit.nsfl_ctl.fake_component"
MODULES = plan.Modules(selector=FAKE, scheduler=FAKE, api=FAKE)
ANY_PORTS = plan.Ports(api=0, selector=0, scheduler=0)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "state"
    yield directory
    standalone.down(directory, grace=2.0)  # nothing a test started outlives it


def environment_of(state_dir: Path, name: str) -> dict[str, str]:
    variables: dict[str, str] = json.loads((state_dir / "run" / f"{name}.env.json").read_text())
    return variables


def test_up_starts_the_three_components_on_one_store(state_dir: Path) -> None:
    control = standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    record = json.loads((state_dir / standalone.RECORD_FILE).read_text())
    assert [c["name"] for c in record["components"]] == ["selector", "scheduler", "api"]
    assert record["api"] == control.api_url and control.api_url.startswith("http://127.0.0.1:")
    assert all(processes.is_alive(c.process) for c in control.components)
    selector, scheduler, api = (environment_of(state_dir, n) for n in ("selector", "scheduler", "api"))
    store = f"sqlite://{state_dir.resolve()}/nsfl.db"
    assert (
        selector["NSFL_SELECTOR_STORE_URL"]
        == scheduler["NSFL_SCHEDULER_STORE_URL"]
        == api["NSFL_API_STORE_URL"]
        == store
    )
    assert scheduler["NSFL_SCHEDULER_OBJECT_STORE_URL"] == api["NSFL_API_OBJECT_STORE_URL"]
    assert (
        scheduler["NSFL_SCHEDULER_SELECTOR"] == control.selector_address == api["NSFL_API_SELECTOR_ADDRESS"]
    )
    assert api["NSFL_API_SCHEDULER_ADDRESS"] == control.components[1].address


def test_up_makes_a_local_ca_and_gives_each_component_its_own_certificate(state_dir: Path) -> None:
    standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    directory = PkiDirectory(state_dir / plan.PKI_DIR)
    assert directory.exists() and stat.S_IMODE(directory.issuer_key.stat().st_mode) == 0o600
    for name, prefix, identity in [("selector", "NSFL_SELECTOR_", "selector"),
                                   ("scheduler", "NSFL_SCHEDULER_", "scheduler"), ("api", "NSFL_API_", "api-server")]:  # fmt: skip
        env = environment_of(state_dir, name)
        cert = load_certificates(Path(env[f"{prefix}TLS_CERT"]).read_bytes())[0]
        assert identity_of(cert).uri == f"spiffe://nsfl.local/control/{identity}"
        assert stat.S_IMODE(Path(env[f"{prefix}TLS_KEY"]).stat().st_mode) == 0o600
        assert Path(env[f"{prefix}TLS_CA"]) == directory.ca.resolve()
        assert Path(env[f"{prefix}TLS_CRL"]) == directory.crl.resolve()
        assert env[f"{prefix}TRUST_DOMAIN"] == "nsfl.local"
        assert not any(key.endswith("INSECURE") for key in env)
    scheduler, api = environment_of(state_dir, "scheduler"), environment_of(state_dir, "api")
    assert Path(scheduler["NSFL_SCHEDULER_COORDINATOR_ISSUER_CERT"]) == directory.issuer.resolve()
    assert Path(scheduler["NSFL_SCHEDULER_COORDINATOR_ISSUER_KEY"]) == directory.issuer_key.resolve()
    assert Path(api["NSFL_API_PKI_DIR"]) == directory.root.resolve()


def test_up_again_keeps_the_ca_and_the_certificates_that_are_still_good(state_dir: Path) -> None:
    standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    directory = PkiDirectory(state_dir / plan.PKI_DIR)
    selector = directory.root / "issued" / "control-selector" / "cert.pem"
    before = (directory.ca.read_bytes(), selector.read_bytes())
    standalone.down(state_dir, grace=2.0)
    standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    assert (directory.ca.read_bytes(), selector.read_bytes()) == before


def test_standalone_up_has_no_plaintext_switch(state_dir: Path) -> None:
    result = invoke(("standalone", "up", "--insecure", "--state-dir", str(state_dir)), {})
    assert result.exit_code == 2 and "No such option '--insecure'" in result.output


def test_up_generates_a_private_admin_token_once(state_dir: Path) -> None:
    first = standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    token_file = state_dir / plan.TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    entry = yaml.safe_load(token_file.read_text())["tokens"][0]
    assert entry["token"] == first.token and entry["role"] == "admin" and entry["namespaces"] == ["*"]
    standalone.down(state_dir, grace=2.0)
    assert standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20).token == first.token


def test_up_again_returns_the_running_control_plane(state_dir: Path) -> None:
    first = standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    again = standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    assert again.already_running and again.api_url == first.api_url


def test_status_and_down_through_the_cli_stop_components_and_coordinators(state_dir: Path) -> None:
    control = standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    workdir = state_dir / "jobs" / "default" / "digits"
    workdir.mkdir(parents=True)
    coordinator = processes.spawn_detached(
        [sys.executable, "-c", "import time; time.sleep(60)", "--workdir", str(workdir)],
        env={}, log_file=workdir / "coordinator.log",
    )  # fmt: skip
    status = invoke(("standalone", "status", "--state-dir", str(state_dir), "-o", "json"), {})
    assert status.exit_code == 0, status.output
    rows = json.loads(status.output)["components"]
    assert [(r["component"], r["state"]) for r in rows] == [
        ("selector", "alive"), ("scheduler", "alive"), ("api", "alive"), ("coordinator", "alive")
    ]  # fmt: skip
    down = invoke(("standalone", "down", "--state-dir", str(state_dir), "--grace", "5"), {})
    assert down.exit_code == 0, down.output
    assert down.output.count("stopped") == 4, down.output
    assert not any(processes.is_alive(c.process) for c in control.components)
    assert not processes.is_alive(coordinator)
    assert_user_error(invoke(("standalone", "status", "--state-dir", str(state_dir)), {}), 3, "standalone up")
    assert "nothing of" in invoke(("standalone", "down", "--state-dir", str(state_dir)), {}).output


def test_status_fails_when_a_component_died(state_dir: Path) -> None:
    control = standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20)
    processes.stop(control.components[1].process, grace=5)
    result = invoke(("standalone", "status", "--state-dir", str(state_dir)), {})
    assert_user_error(result, 6, "not running: scheduler")
    assert "dead" in result.stdout


def test_a_component_that_fails_stops_the_others_and_shows_its_log(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_COMPONENT_FAIL", "scheduler")
    lines: list[str] = []
    with pytest.raises(Unavailable, match="the scheduler exited with code 2 while starting"):
        standalone.up(state_dir, ports=ANY_PORTS, modules=MODULES, timeout=20, report=lines.append)
    assert any("Error: setting 'listen' of the fake scheduler is broken" in line for line in lines)
    assert not (state_dir / standalone.RECORD_FILE).exists()
    assert standalone.down(state_dir) == []  # the selector was stopped already


@pytest.mark.parametrize(
    ("component", "settings_module", "settings_class", "prefix"),
    [("selector", "client_selector.settings", "SelectorSettings", "NSFL_SELECTOR_"),
     ("scheduler", "job_scheduler.settings", "SchedulerSettings", "NSFL_SCHEDULER_"),
     ("api", "api_server.settings", "ApiSettings", "NSFL_API_")],
)  # fmt: skip
def test_every_variable_of_the_plan_is_a_setting_of_its_component(
    tmp_path: Path, component: str, settings_module: str, settings_class: str, prefix: str
) -> None:
    """The components refuse unknown ``NSFL_<COMPONENT>_*`` variables; a renamed setting must fail here."""
    module = pytest.importorskip(settings_module)
    fields = {f.name for f in dataclasses.fields(getattr(module, settings_class))}
    tls = plan.plane_tls(tmp_path, pki.ensure_control_plane(tmp_path / plan.PKI_DIR).trust_domain())
    builders = {
        "selector": lambda: plan.selector_component(tmp_path, 0, plan.Modules(), {}, tls),
        "scheduler": lambda: plan.scheduler_component(tmp_path, 0, "127.0.0.1:1", plan.Modules(), {}, tls),
        "api": lambda: plan.api_component(
            tmp_path, 0, scheduler="127.0.0.1:1", selector="127.0.0.1:2", modules=plan.Modules(), env={}, tls=tls
        ),  # fmt: skip
    }
    variables = [name for name in builders[component]().env if name.startswith(prefix)]
    assert variables
    assert {name[len(prefix) :].lower() for name in variables} <= fields
    module.load(
        env={name: value for name, value in builders[component]().env.items() if name.startswith(prefix)}
    )
