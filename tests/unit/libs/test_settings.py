"""Settings load from defaults, a file and NSFL_* variables, strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from libs.errors import InvalidSetting, UnknownSetting
from libs.settings import load_settings


@dataclass(frozen=True)
class Inner:
    enabled: bool = False
    ratio: float = 0.5


@dataclass(frozen=True)
class Example:
    host: str = "127.0.0.1"
    port: int = 8080
    debug: bool = False
    state_dir: Path = Path("/tmp/x")
    roots: tuple[str, ...] = ()
    timeout: float | None = None
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidSetting(f"setting 'port' must be between 0 and 65535, got {self.port}")


def test_defaults_apply_when_nothing_is_given() -> None:
    assert load_settings(Example, prefix="NSFL_EX_", env={}) == Example()


def test_environment_overrides_file_and_converts_types(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 9000\ndebug: true\ninner:\n  enabled: true\n")
    env = {"NSFL_EX_PORT": "9100", "NSFL_EX_ROOTS": "/a, /b", "NSFL_EX_TIMEOUT": "2.5", "OTHER": "x"}
    got = load_settings(Example, prefix="NSFL_EX_", file=cfg, env=env)
    assert got.port == 9100 and got.debug is True and got.roots == ("/a", "/b")
    assert got.timeout == 2.5 and got.inner == Inner(enabled=True)


def test_unknown_file_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prot: 1\n")
    with pytest.raises(UnknownSetting, match=r"unknown setting 'prot'.*did you mean 'port'"):
        load_settings(Example, prefix="NSFL_EX_", file=cfg, env={})


def test_unknown_environment_variable_under_the_prefix_is_an_error() -> None:
    with pytest.raises(UnknownSetting, match="NSFL_EX_HOTS"):
        load_settings(Example, prefix="NSFL_EX_", env={"NSFL_EX_HOTS": "x"})


def test_unknown_nested_key_names_its_full_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("inner:\n  enabeld: true\n")
    with pytest.raises(UnknownSetting, match="inner.enabeld"):
        load_settings(Example, prefix="NSFL_EX_", file=cfg, env={})


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("NSFL_EX_PORT", "eighty", "'port' must be an integer"),
        ("NSFL_EX_DEBUG", "maybe", "'debug' must be true or false"),
        ("NSFL_EX_PORT", "70000", "between 0 and 65535"),
    ],
)
def test_bad_values_name_the_key_and_what_is_expected(var: str, value: str, message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        load_settings(Example, prefix="NSFL_EX_", env={var: value})


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- 1\n- 2\n")
    with pytest.raises(InvalidSetting, match="must hold a mapping"):
        load_settings(Example, prefix="NSFL_EX_", file=cfg, env={})


def test_malformed_yaml_is_refused_with_the_file_name(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: [1,\n")
    with pytest.raises(InvalidSetting, match="c.yaml is not valid YAML"):
        load_settings(Example, prefix="NSFL_EX_", file=cfg, env={})
