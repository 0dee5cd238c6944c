"""The CLI's own configuration: where the API is, the bearer token, the default namespace.

The file is YAML with exactly three keys::

    api: http://127.0.0.1:8080      # the REST API's base URL
    token: <bearer token>           # sent as "Authorization: Bearer ..."
    namespace: default              # used when a command gets no -n

Where it lives, first match wins: ``--config FILE``, ``$NSFL_CTL_CONFIG``,
``$XDG_CONFIG_HOME/nsfl/config.yaml``, ``~/.config/nsfl/config.yaml``.  The
variables ``NSFL_API``, ``NSFL_TOKEN`` and ``NSFL_NAMESPACE`` override the
file's values for one invocation (CI jobs set them and keep no file).

Why the care with modes: the file holds a bearer token, which is as good as
a password to the API.  It is written to a temporary file created with mode
0600 in a directory created with mode 0700, then renamed over the old one,
so there is no moment at which the token is readable by others or half
written; an existing file is re-chmodded to 0600 on every write.  Reading
is strict like every nsfl settings loader: an unknown key is an error
naming it, because a typo (``tokne:``) would otherwise silently mean "no
token".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from libs.errors import InvalidSetting, UnknownSetting
from libs.files import write_text_atomic

CONFIG_VARIABLE = "NSFL_CTL_CONFIG"
OVERRIDE_VARIABLES = {"api": "NSFL_API", "token": "NSFL_TOKEN", "namespace": "NSFL_NAMESPACE"}
DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_NAMESPACE = "default"
KEYS = ("api", "token", "namespace")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class CliConfig:
    """What the CLI needs to call the API (``token`` empty: none configured)."""

    api: str = DEFAULT_API
    token: str = ""
    namespace: str = DEFAULT_NAMESPACE

    def with_value(self, key: str, value: str) -> CliConfig:
        """A copy with ``key`` set to ``value``, checked."""
        check_key(key)
        return replace(self, **{key: check_value(key, value)})

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file used when no ``--config`` is given."""
    env = os.environ if env is None else env
    if env.get(CONFIG_VARIABLE):
        return Path(env[CONFIG_VARIABLE]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "nsfl" / "config.yaml"


def check_key(key: str) -> None:
    if key not in KEYS:
        raise UnknownSetting(
            f"unknown config key {key!r}: the keys are {', '.join(KEYS)}", details={"key": key}
        )


def check_value(key: str, value: str) -> str:
    """``value`` normalised for ``key``, or ``InvalidSetting`` saying what is expected."""
    value = value.strip()
    if key == "api":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidSetting(f"config key 'api' must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")
    if key == "namespace" and not _DNS_LABEL.match(value):
        raise InvalidSetting(
            f"config key 'namespace' must be a DNS-1123 label (lowercase letters, digits, '-'), got {value!r}"
        )
    if key == "token" and any(ch.isspace() for ch in value):
        raise InvalidSetting("config key 'token' must not contain spaces")
    return value


def read_file(path: Path) -> CliConfig:
    """The config in ``path`` (defaults when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CliConfig()
    except OSError as exc:
        raise InvalidSetting(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSetting(f"the config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if data is None:
        return CliConfig()
    if not isinstance(data, dict):
        raise InvalidSetting(f"the config file {path} must hold a mapping with the keys {', '.join(KEYS)}")
    config = CliConfig()
    for key, value in data.items():
        if key not in KEYS:
            raise UnknownSetting(
                f"the config file {path} has an unknown key {key!r} (the keys are {', '.join(KEYS)})",
                details={"key": str(key)},
            )
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidSetting(f"the config file {path}: key {key!r} must be a string")
        config = config.with_value(key, value)
    return config


def load(path: Path, env: Mapping[str, str] | None = None) -> CliConfig:
    """The file's config with ``NSFL_API``/``NSFL_TOKEN``/``NSFL_NAMESPACE`` applied on top."""
    env = os.environ if env is None else env
    config = read_file(path)
    for key, variable in OVERRIDE_VARIABLES.items():
        if env.get(variable):
            try:
                config = config.with_value(key, env[variable])
            except InvalidSetting as exc:
                raise InvalidSetting(f"${variable}: {exc.message}") from None
    return config


def write_file(path: Path, config: CliConfig) -> None:
    """Write ``config`` to ``path`` atomically, readable by its owner only (see the module docstring)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {key: value for key, value in config.as_dict().items() if value}
    text = "# nsfl-ctl configuration (holds a bearer token: keep it private)\n"
    text += yaml.safe_dump(data, sort_keys=False)
    write_text_atomic(path, text, mode=0o600)  # 0600 from the temporary file's creation on


def update_file(path: Path, **values: str) -> CliConfig:
    """Set some keys in the file at ``path`` (not the environment's overrides) and write it back."""
    config = read_file(path)
    for key, value in values.items():
        config = config.with_value(key, value)
    write_file(path, config)
    return config


def masked(token: str) -> str:
    """A token as shown by ``config get``: enough to tell two apart, not enough to use."""
    if not token:
        return ""
    return token[:4] + "..." if len(token) > 8 else "***"
