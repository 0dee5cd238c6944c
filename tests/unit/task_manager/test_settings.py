"""The config file: strict keys, paths from the file's folder, script roots, and the CLI's Error line."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.errors import InvalidSetting, PathOutsideRoot, UnknownSetting
from task_manager.__main__ import main
from task_manager.settings import DEFAULT_EXECUTOR_ENTRY, load

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
def config(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train.py").write_text("")
    (tmp_path / "scripts" / "function.py").write_text("")
    path = tmp_path / "client.yaml"
    path.write_text(CONFIG)
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
def test_an_unknown_key_is_an_error_naming_it(config: Path, change: tuple[str, str], key: str) -> None:
    config.write_text(CONFIG.replace(*change))
    with pytest.raises(UnknownSetting) as caught:
        load(config, env={})
    assert key in caught.value.message


def test_an_unknown_environment_variable_is_an_error(config: Path) -> None:
    with pytest.raises(UnknownSetting, match="NSFL_TM_MAX_TASKS"):
        load(config, env={"NSFL_TM_MAX_TASKS": "2"})


def test_a_script_outside_the_allowed_roots_is_an_error_naming_the_entry(
    config: Path, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere.py").write_text("")
    config.write_text(CONFIG.replace("scripts/function.py", "elsewhere.py"))
    with pytest.raises(PathOutsideRoot, match="task entry 'digits-fn'"):
        load(config, env={})


def test_a_symlink_out_of_the_allowed_roots_is_caught(config: Path, tmp_path: Path) -> None:
    (tmp_path / "evil.py").write_text("")
    (tmp_path / "scripts" / "link.py").symlink_to(tmp_path / "evil.py")
    config.write_text(CONFIG.replace("scripts/function.py", "scripts/link.py"))
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
        (("max_parallel_tasks: 2", "tls_ca: ca.pem"), "go together"),
        (("max_parallel_tasks: 2", "executor_nice: 20"), "'executor_nice' must be within 0-19"),
        (("scripts/train.py", "scripts/missing.py"), "is not a file"),
    ],
)
def test_invalid_values_are_errors_that_say_what_is_wrong(
    config: Path, change: tuple[str, str], message: str
) -> None:
    config.write_text(CONFIG.replace(*change))
    with pytest.raises(InvalidSetting, match=message):
        load(config, env={})


def test_the_daemon_prints_one_error_line_and_exits_2_on_a_bad_config(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(CONFIG + "surprise: 1\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: unknown setting 'surprise'")
    assert err.count("\n") == 1
