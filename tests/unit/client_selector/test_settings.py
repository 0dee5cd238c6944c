"""Selector settings: documented defaults, NSFL_SELECTOR_* variables, and checks at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_selector.settings import SelectorSettings, load
from libs.errors import InvalidSetting, UnknownSetting


def test_defaults_listen_on_loopback_and_keep_the_registry_in_the_state_dir() -> None:
    settings = load(env={"NSFL_SELECTOR_STATE_DIR": "/var/lib/nsfl", "NSFL_SELECTOR_INSECURE": "1"})
    assert settings.listen == "127.0.0.1:50051" and settings.tls is None
    assert settings.resolved_store_url == "sqlite:///var/lib/nsfl/selector.db"
    assert (settings.heartbeat_interval_seconds, settings.heartbeat_timeout_seconds) == (2.0, 10.0)
    assert settings.reservation_seconds == 600.0 and settings.offer_answer_timeout_seconds == 10.0
    assert settings.client_retention_seconds == 7 * 24 * 3600 and settings.max_clients_per_source == 100


def test_variables_override_the_file(tmp_path: Path) -> None:
    config = tmp_path / "selector.yaml"
    config.write_text(
        "listen: 0.0.0.0:6000\nheartbeat_timeout_seconds: 30\n"
        "tls_ca: /pki/ca.pem\ntls_cert: /pki/selector.pem\ntls_key: /pki/selector-key.pem\n"
    )
    settings = load(
        config, env={"NSFL_SELECTOR_HEARTBEAT_TIMEOUT_SECONDS": "20", "NSFL_SELECTOR_LOG_JSON": "1"}
    )
    assert (
        settings.listen == "0.0.0.0:6000" and settings.heartbeat_timeout_seconds == 20.0 and settings.log_json
    )
    assert settings.tls is not None and settings.tls.cert == Path("/pki/selector.pem")


def test_without_tls_files_the_selector_refuses_to_start_and_says_how_to_fix_it() -> None:
    with pytest.raises(
        InvalidSetting, match="mutual TLS is required: give 'tls_ca', 'tls_cert' and 'tls_key'"
    ):
        load(env={})


def test_plaintext_is_refused_on_an_address_that_is_not_loopback() -> None:
    with pytest.raises(InvalidSetting, match="allows plaintext only on loopback, but '0.0.0.0:50051'"):
        load(env={"NSFL_SELECTOR_INSECURE": "true", "NSFL_SELECTOR_LISTEN": "0.0.0.0:50051"})


def test_an_unknown_variable_is_an_error_naming_it() -> None:
    with pytest.raises(UnknownSetting, match="NSFL_SELECTOR_HEARTBEAT_TIMOUT"):
        load(env={"NSFL_SELECTOR_HEARTBEAT_TIMOUT": "3"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"listen": "nowhere"}, "host:port"),
        ({"heartbeat_interval_seconds": 0.0}, "positive number"),
        ({"heartbeat_interval_seconds": 5.0, "heartbeat_timeout_seconds": 6.0}, "at least twice"),
        ({"tls_ca": Path("/ca.pem"), "insecure": False}, "give all three or none"),
        ({"client_retention_seconds": 0.0}, "positive number"),
        ({"client_retention_seconds": 5.0}, "at least 'heartbeat_timeout_seconds'"),
        ({"max_clients_per_source": 0}, "'max_clients_per_source' must be at least 1"),
    ],
)
def test_inconsistent_settings_are_refused_at_start(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        SelectorSettings(**{"insecure": True, **changes}).validate()  # type: ignore[arg-type]
