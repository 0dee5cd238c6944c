"""The coordinators' certificates the scheduler signs: for one job, for its lifetime, from a CA it can use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from job_scheduler.coordinator_certificates import (
    MAX_LIFETIME,
    CoordinatorIssuer,
    certificate_lifetime,
    server_hosts,
)
from libs.errors import InvalidSetting
from libs.jobspec import JobSpec
from libs.pki.authority import identity_of, key_pem, new_key
from tests.fixtures.pki import TestPki
from tests.unit.job_scheduler.fakes import issuer_of

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def job(**fields: int) -> JobSpec:
    return JobSpec.parse({"name": "digits", "namespace": "team-a", "runtime": "pytorch", "taskEntry": "train",
                          **fields})


def test_the_lifetime_is_every_round_at_its_deadline_plus_a_day_and_never_beyond_thirty_days() -> None:
    assert certificate_lifetime(job(rounds=4, roundTimeoutSeconds=600)) == dt.timedelta(hours=24, minutes=40)
    assert certificate_lifetime(job()) == dt.timedelta(seconds=10 * 300, days=1), "the schema's defaults"
    assert certificate_lifetime(job(rounds=100_000, roundTimeoutSeconds=86_400)) == MAX_LIFETIME


def test_hosts_are_named_once_and_wildcard_listen_addresses_left_out() -> None:
    assert server_hosts(["127.0.0.1", "0.0.0.0", "", "::", "127.0.0.1", "[::1]", "fl.example.com"]) == [
        "127.0.0.1", "::1", "fl.example.com"]  # fmt: skip


def test_a_certificate_names_exactly_its_job_and_ends_with_its_lifetime(test_pki: TestPki) -> None:
    issuer = issuer_of(test_pki)
    issuer = CoordinatorIssuer(issuer.authority, issuer.trust_domain, issuer.ca, issuer.crl, clock=lambda: NOW)
    issued = issuer.issue("team-a", "digits", job(rounds=2, roundTimeoutSeconds=60), hosts=["10.0.0.5"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert identity_of(cert).uri == "spiffe://nsfl.local/coordinator/team-a/digits" == issued.identity.uri
    assert cert.not_valid_after_utc == issued.not_after == NOW + dt.timedelta(seconds=120, days=1)
    assert b"PRIVATE KEY" in issued.key_pem and "PRIVATE KEY" not in repr(issued), "the key never shows"
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)  # fmt: skip
    assert [str(ip) for ip in ips] == ["10.0.0.5"]


def test_an_issuer_that_cannot_sign_is_refused_at_start(test_pki: TestPki, tmp_path: Path) -> None:
    directory = test_pki.directory
    settings = {"trust_domain": "nsfl.local", "ca": directory.ca}
    other_key = tmp_path / "other-key.pem"
    other_key.write_bytes(key_pem(new_key()))
    with pytest.raises(InvalidSetting, match="is not the key of 'coordinator_issuer_cert'"):
        CoordinatorIssuer.load(directory.issuer, other_key, **settings)  # type: ignore[arg-type]
    leaf = test_pki.files(test_pki.identity("scheduler"))
    with pytest.raises(InvalidSetting, match="not a CA certificate"):
        CoordinatorIssuer.load(leaf.cert, leaf.key, **settings)  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match="cannot read"):
        CoordinatorIssuer.load(tmp_path / "missing.pem", directory.issuer_key, **settings)  # type: ignore[arg-type]
