"""``nsfl-ctl config``: values stored privately (0600), read strictly, overridden by the environment."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from nsfl_ctl import config as cli_config
from tests.unit.nsfl_ctl.conftest import Run, assert_user_error, invoke


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_set_writes_a_file_only_its_owner_can_read(config_file: Path) -> None:
    env = {"NSFL_CTL_CONFIG": str(config_file)}
    result = invoke(("config", "set", "token", "s3cret-token-value-123"), env)
    assert result.exit_code == 0, result.output
    assert "s3cr..." in result.output and "s3cret-token-value-123" not in result.output
    assert mode(config_file) == 0o600
    assert mode(config_file.parent) == 0o700
    assert yaml.safe_load(config_file.read_text()) == {
        "api": cli_config.DEFAULT_API, "token": "s3cret-token-value-123", "namespace": "default"
    }  # fmt: skip


def test_config_set_keeps_0600_when_the_file_was_readable_by_others(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("api: http://example.test:8080\n")
    config_file.chmod(0o644)
    result = invoke(("config", "set", "namespace", "team-a"), {"NSFL_CTL_CONFIG": str(config_file)})
    assert result.exit_code == 0, result.output
    assert mode(config_file) == 0o600
    assert yaml.safe_load(config_file.read_text())["api"] == "http://example.test:8080"


def test_config_get_shows_values_with_the_token_masked_unless_revealed(config_file: Path) -> None:
    env = {"NSFL_CTL_CONFIG": str(config_file)}
    invoke(("config", "set", "api", "http://10.0.0.5:8080/"), env)
    invoke(("config", "set", "token", "-"), env, stdin="from-stdin-token-42\n")
    shown = invoke(("config", "get"), env)
    assert shown.exit_code == 0
    assert "http://10.0.0.5:8080" in shown.output and "from..." in shown.output
    assert "from-stdin-token-42" not in shown.output
    assert invoke(("config", "get", "token", "--reveal"), env).output.strip() == "from-stdin-token-42"
    as_json = invoke(("config", "get", "-o", "json"), env)
    assert '"api": "http://10.0.0.5:8080"' in as_json.output


def test_environment_overrides_the_file(config_file: Path) -> None:
    env = {"NSFL_CTL_CONFIG": str(config_file)}
    invoke(("config", "set", "api", "http://file.test:1"), env)
    result = invoke(("config", "get", "api"), {**env, "NSFL_API": "http://env.test:2"})
    assert result.output.strip() == "http://env.test:2"


def test_the_config_flag_wins_over_the_variable(tmp_path: Path, config_file: Path) -> None:
    other = tmp_path / "other.yaml"
    result = invoke(
        ("--config", str(other), "config", "set", "namespace", "ns1"), {"NSFL_CTL_CONFIG": str(config_file)}
    )
    assert result.exit_code == 0
    assert other.exists() and not config_file.exists()


def test_default_path_follows_xdg_config_home(tmp_path: Path) -> None:
    assert cli_config.default_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "nsfl" / "config.yaml"
    assert cli_config.default_path({"NSFL_CTL_CONFIG": "/x/c.yaml", "XDG_CONFIG_HOME": "/y"}) == Path(
        "/x/c.yaml"
    )


def test_an_invalid_value_is_one_error_line_with_exit_code_2(config_file: Path) -> None:
    result = invoke(("config", "set", "api", "ftp://nowhere"), {"NSFL_CTL_CONFIG": str(config_file)})
    assert_user_error(result, 2, "'api'", "http://")
    assert not config_file.exists()


def test_an_unknown_key_in_the_file_is_named(run: Run, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("api: http://127.0.0.1:1\ntokne: abc\n")
    result = run("get", "jobs", NSFL_API=None)
    assert_user_error(result, 2, "'tokne'", str(config_file))


def test_a_file_that_is_not_yaml_is_one_error_line(run: Run, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("api: [unclosed\n")
    assert_user_error(run("get", "jobs"), 2, "not valid YAML")


def test_an_unknown_key_on_the_command_line_is_a_usage_error(config_file: Path) -> None:
    result = invoke(("config", "set", "colour", "blue"), {"NSFL_CTL_CONFIG": str(config_file)})
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "colour" in result.output
