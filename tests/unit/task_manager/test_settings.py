"""The config file: strict keys, paths from the file's folder, script roots, the client certificate, and the
CLI's Error line."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.errors import InvalidSetting, PathOutsideRoot, UnknownSetting
from task_manager.__main__ import main
from task_manager.settings import DEFAULT_EXECUTOR_ENTRY, load
from tests.fixtures.pki import TestPki

CONFIG = """\
client_id: hospital-a
selector_address: selector.example.org:50051
workspace: ws
datasets:
  digits: {path: data/digits, samples: 600, tags: [iid, tabular]}
task_entries:
  digits-train: {script: scripts/train.py, runtime: pytorch}
  digits-fn: {script: scripts/function.py, runtime: pytorch, mode: function}
allowed_script_roots: [scripts]
labels: {site: a, tier: 1}
resources: {cpus: 4, memory_mb: 8192}
max_parallel_tasks: 2
"""


@pytest.fixture
def tls(test_pki: TestPki, tmp_path: Path) -> str:
    """The config lines of hospital-a's certificate, copied beside the config (relative paths)."""
    files = test_pki.files(test_pki.identity("client", "hospital-a"))
    (tmp_path / "pki").mkdir()
    for name, path in (("ca.pem", files.ca), ("cert.pem", files.cert), ("key.pem", files.key)):
        (tmp_path / "pki" / name).write_bytes(path.read_bytes())
    return "tls_ca: pki/ca.pem\ntls_cert: pki/cert.pem\ntls_key: pki/key.pem\n"


@pytest.fixture
def config(tmp_path: Path, tls: str) -> Path:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train.py").write_text("")
    (tmp_path / "scripts" / "function.py").write_text("")
    path = tmp_path / "client.yaml"
    path.write_text(CONFIG + tls)
    return path


def test_a_config_file_loads_with_paths_from_its_folder_and_defaults_filled_in(config: Path) -> None:
    settings = load(config, env={})
    base = config.parent
    assert settings.workspace == base / "ws"
    assert settings.datasets["digits"].path == base / "data" / "digits"
    assert settings.datasets["digits"].tags == ("iid", "tabular")
    assert settings.task_entries["digits-fn"].mode == "function"
    assert settings.task_entries["digits-train"].script == base / "scripts" / "train.py"
    assert settings.served_runtimes == ("pytorch",)
    assert settings.labels == {"site": "a", "tier": "1"}
    assert settings.resources.memory_mb == 8192
    assert settings.executor_entry == DEFAULT_EXECUTOR_ENTRY
    assert settings.warm_runtimes is True
    assert settings.preload["pytorch"] == ("torch",)
    assert (settings.reconnect_initial_seconds, settings.reconnect_max_seconds) == (0.2, 5.0)
    assert settings.tls is not None and settings.tls.cert == base / "pki" / "cert.pem"


def test_environment_variables_override_the_file(config: Path) -> None:
    settings = load(config, env={"NSFL_TM_MAX_PARALLEL_TASKS": "3", "NSFL_TM_WARM_RUNTIMES": "false"})
    assert (settings.max_parallel_tasks, settings.warm_runtimes) == (3, False)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            ("max_parallel_tasks: 2", "max_paralel_tasks: 2"),
            "unknown setting 'max_paralel_tasks' (did you mean",
        ),
        (("samples: 600", "sample: 600"), "datasets.digits: unknown setting 'sample'"),
        (("mode: function", "mdoe: function"), "task_entries.digits-fn: unknown setting 'mdoe'"),
        (("cpus: 4", "cpu: 4"), "unknown setting 'resources.cpu'"),
    ],
)
def test_an_unknown_key_is_an_error_naming_it(
    config: Path, tls: str, change: tuple[str, str], key: str
) -> None:
    config.write_text(CONFIG.replace(*change) + tls)
    with pytest.raises(UnknownSetting) as caught:
        load(config, env={})
    assert key in caught.value.message


def test_an_unknown_environment_variable_is_an_error(config: Path) -> None:
    with pytest.raises(UnknownSetting, match="NSFL_TM_MAX_TASKS"):
        load(config, env={"NSFL_TM_MAX_TASKS": "2"})


def test_a_script_outside_the_allowed_roots_is_an_error_naming_the_entry(
    config: Path, tmp_path: Path, tls: str
) -> None:
    (tmp_path / "elsewhere.py").write_text("")
    config.write_text(CONFIG.replace("scripts/function.py", "elsewhere.py") + tls)
    with pytest.raises(PathOutsideRoot, match="task entry 'digits-fn'"):
        load(config, env={})


def test_a_symlink_out_of_the_allowed_roots_is_caught(config: Path, tmp_path: Path, tls: str) -> None:
    (tmp_path / "evil.py").write_text("")
    (tmp_path / "scripts" / "link.py").symlink_to(tmp_path / "evil.py")
    config.write_text(CONFIG.replace("scripts/function.py", "scripts/link.py") + tls)
    with pytest.raises(PathOutsideRoot, match="digits-fn"):
        load(config, env={})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("client_id: hospital-a", "client_id: 'bad id'"), "client_id"),
        (("runtime: pytorch, mode: function", "runtime: pytorch, mode: notebook"), "mode must be one of"),
        (("max_parallel_tasks: 2", "max_parallel_tasks: 0"), "max_parallel_tasks"),
        (("max_parallel_tasks: 2", "runtimes: [tensorflow]"), "not in 'runtimes'"),
        (("max_parallel_tasks: 2", "executor_entry: no-colon"), "executor_entry"),
        (("max_parallel_tasks: 2", "executor_nice: 20"), "'executor_nice' must be within 0-19"),
        (("scripts/train.py", "scripts/missing.py"), "is not a file"),
    ],
)
def test_invalid_values_are_errors_that_say_what_is_wrong(
    config: Path, tls: str, change: tuple[str, str], message: str
) -> None:
    config.write_text(CONFIG.replace(*change) + tls)
    with pytest.raises(InvalidSetting, match=message):
        load(config, env={})


def test_the_daemon_prints_one_error_line_and_exits_2_on_a_bad_config(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(config.read_text() + "surprise: 1\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: unknown setting 'surprise'")
    assert err.count("\n") == 1


def test_without_tls_files_the_task_manager_refuses_to_start_and_says_how_to_fix_it(config: Path) -> None:
    config.write_text(CONFIG)
    with pytest.raises(
        InvalidSetting, match="mutual TLS is required: give 'tls_ca', 'tls_cert' and 'tls_key'"
    ):
        load(config, env={})


def test_half_of_the_tls_files_is_an_error(config: Path) -> None:
    config.write_text(CONFIG + "tls_ca: pki/ca.pem\n")
    with pytest.raises(InvalidSetting, match="go together"):
        load(config, env={})


def test_plaintext_to_a_selector_that_is_not_on_loopback_is_refused(config: Path) -> None:
    config.write_text(CONFIG + "insecure: true\n")
    with pytest.raises(InvalidSetting, match="plaintext only on loopback, but 'selector.example.org:50051'"):
        load(config, env={})


def test_a_certificate_for_another_client_id_is_refused_with_how_to_fix_it(config: Path) -> None:
    config.write_text(config.read_text().replace("client_id: hospital-a", "client_id: hospital-b"))
    with pytest.raises(InvalidSetting) as caught:
        load(config, env={})
    message = caught.value.message
    assert "identifies client 'hospital-a', but 'client_id' is 'hospital-b'" in message
    assert "set 'client_id: hospital-a'" in message and "nsfl-ctl pki enroll" in message


def test_a_certificate_that_is_not_a_clients_is_refused(config: Path, test_pki: TestPki) -> None:
    files = test_pki.files(test_pki.identity("scheduler"))
    text = config.read_text().replace("pki/cert.pem", str(files.cert)).replace("pki/key.pem", str(files.key))
    config.write_text(text)
    with pytest.raises(
        InvalidSetting, match="identifies spiffe://nsfl.local/control/scheduler, which is not a client"
    ):
        load(config, env={})
