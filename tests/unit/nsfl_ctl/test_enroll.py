"""Enrolment and revocation through the API: ``pki enroll``, ``pki enrollment-token``, ``pki revoke --client``.

The API is the fake one with enrolment endpoints (``fake_enrollment``): real
HTTP on loopback, signing with a real CA in a PKI directory, so the files
``enroll`` writes are checked as certificates, not as strings.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from cryptography import x509

from libs.pki.authority import identity_of, load_certificates, load_key
from libs.pki.directory import PkiDirectory
from libs.pki.revocation import load_crl
from tests.unit.nsfl_ctl.conftest import Run, assert_user_error, invoke
from tests.unit.nsfl_ctl.fake_api import TOKEN, ServerThread
from tests.unit.nsfl_ctl.fake_enrollment import FakeEnrollmentApi


@pytest.fixture
def enrolling(tmp_path: Path) -> Iterator[FakeEnrollmentApi]:
    directory = PkiDirectory(tmp_path / "server-pki")
    directory.init("nsfl.local")
    fake = FakeEnrollmentApi(pki=directory)
    server = ServerThread(fake)
    server.start()
    yield fake
    server.stop()


@pytest.fixture
def admin(enrolling: FakeEnrollmentApi, config_file: Path) -> Run:
    def call(*args: str) -> Result:
        return invoke(
            args, {"NSFL_CTL_CONFIG": str(config_file), "NSFL_API": enrolling.url, "NSFL_TOKEN": TOKEN}
        )

    return call


def enroll(api: FakeEnrollmentApi, token: str, out: Path, *extra: str) -> Result:
    return invoke(("pki", "enroll", "--api", api.url, "--token", token, "--out", str(out), *extra), {})


def leaf(path: Path) -> x509.Certificate:
    return load_certificates(path.read_bytes())[0]


def test_enroll_writes_a_certificate_for_exactly_the_tokens_client_id(
    enrolling: FakeEnrollmentApi, tmp_path: Path
) -> None:
    out = tmp_path / "tls"
    result = enroll(enrolling, enrolling.token_for("hospital-a"), out)
    assert result.exit_code == 0, result.output
    cert, key = leaf(out / "cert.pem"), load_key((out / "key.pem").read_bytes())
    assert identity_of(cert).uri == "spiffe://nsfl.local/client/hospital-a"
    assert cert.public_key() == key.public_key()  # the key made here, never sent
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert enrolling.pki is not None and (out / "ca.pem").read_bytes() == enrolling.pki.ca.read_bytes()
    printed = yaml.safe_load(result.stdout)
    assert printed == {
        "client_id": "hospital-a", "tls_ca": str(out / "ca.pem"), "tls_cert": str(out / "cert.pem"),
        "tls_key": str(out / "key.pem"), "trust_domain": "nsfl.local",
    }  # fmt: skip


def test_an_enrolment_token_is_redeemed_once(enrolling: FakeEnrollmentApi, tmp_path: Path) -> None:
    token = enrolling.token_for("hospital-a")
    assert enroll(enrolling, token, tmp_path / "first").exit_code == 0
    assert_user_error(enroll(enrolling, token, tmp_path / "second"), 5, "not known")
    assert not (tmp_path / "second").exists()


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [("other-key", "for another key than this request's"), ("other-id", "said client 'someone-else'")],
)
def test_enroll_refuses_a_reply_that_is_not_for_this_request(
    enrolling: FakeEnrollmentApi, tmp_path: Path, tamper: str, fragment: str
) -> None:
    enrolling.tamper = tamper
    result = enroll(enrolling, enrolling.token_for("hospital-a"), tmp_path / "tls")
    assert_user_error(result, 2, fragment)
    assert not (tmp_path / "tls").exists()  # nothing written


def test_enroll_refuses_a_certificate_that_does_not_chain_to_the_ca_sent(
    enrolling: FakeEnrollmentApi, tmp_path: Path
) -> None:
    stranger = PkiDirectory(tmp_path / "stranger")
    stranger.init("nsfl.local")
    enrolling.pki = stranger  # signs with another CA of the same name ...
    token = enrolling.token_for("hospital-a")
    original_ca = stranger.ca.read_bytes()
    stranger.ca.write_bytes(PkiDirectory(tmp_path / "server-pki").ca.read_bytes())  # ... and sends ours
    result = enroll(enrolling, token, tmp_path / "tls")
    stranger.ca.write_bytes(original_ca)
    assert_user_error(result, 2, "does not verify")


def test_enroll_with_a_ca_file_needs_an_https_api(enrolling: FakeEnrollmentApi, tmp_path: Path) -> None:
    ca = tmp_path / "server-pki" / "ca.pem"
    result = enroll(enrolling, "t", tmp_path / "tls", "--ca-file", str(ca))
    assert_user_error(result, 2, "--ca-file verifies an https:// API")


def test_an_admin_makes_an_enrolment_token_that_names_the_client_and_its_lifetime(
    admin: Run, enrolling: FakeEnrollmentApi
) -> None:
    result = admin("pki", "enrollment-token", "--client", "hospital-a", "--ttl", "2h")
    assert result.exit_code == 0, result.output
    assert enrolling.bodies[-1] == {"clientId": "hospital-a", "ttlSeconds": 7200.0}
    (token,) = [t for t in enrolling.tokens if t in result.stdout]
    assert enrolling.tokens[token] == "hospital-a" and "nsfl-ctl pki enroll --api" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(("--client", "hospital-a", "--ttl", "soon"), "duration 'soon'"),
     (("--client", "hospital-a", "--ttl", "0h"), "positive"),
     (("--client", "no/slash"), "client id 'no/slash'")],
)  # fmt: skip
def test_a_bad_enrolment_token_request_is_refused_before_calling_the_api(
    admin: Run, enrolling: FakeEnrollmentApi, args: tuple[str, ...], fragment: str
) -> None:
    assert_user_error(admin("pki", "enrollment-token", *args), 2, fragment)
    assert enrolling.sent("POST") == []


def test_revoking_a_client_through_the_api_puts_its_certificate_in_the_crl(
    admin: Run, enrolling: FakeEnrollmentApi, tmp_path: Path
) -> None:
    enroll(enrolling, enrolling.token_for("hospital-a"), tmp_path / "tls")
    result = admin("pki", "revoke", "--client", "hospital-a", "--reason", "left the federation")
    assert result.exit_code == 0 and "1 certificate(s)" in result.output, result.output
    assert enrolling.bodies[-1] == {"reason": "left the federation"}
    directory = enrolling.pki
    assert directory is not None
    revoked = {serial for _, serial in load_crl(directory.crl.read_bytes(), [leaf(directory.ca)])}
    assert revoked == {leaf(tmp_path / "tls" / "cert.pem").serial_number}
    assert_user_error(admin("pki", "revoke", "--client", "nobody"), 3, "no certificate was issued")


def test_when_the_api_cannot_write_its_crl_revoke_says_which_command_can(
    admin: Run, enrolling: FakeEnrollmentApi, tmp_path: Path
) -> None:
    enroll(enrolling, enrolling.token_for("hospital-a"), tmp_path / "tls")
    enrolling.tamper = "read-only"
    serial = leaf(tmp_path / "tls" / "cert.pem").serial_number
    assert_user_error(
        admin("pki", "revoke", "--client", "hospital-a"), 4,
        f"nsfl-ctl pki revoke --dir <PKI> --client hospital-a --serial {serial}",
    )  # fmt: skip
