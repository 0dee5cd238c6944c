"""``nsfl-ctl pki`` on a PKI directory: real files, real certificates, every command through the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import Result
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from libs.files import write_atomic
from libs.pki.authority import cert_pem, create_root, identity_of, key_pem, load_certificates, new_key
from libs.pki.directory import PkiDirectory
from libs.pki.identity import Identity
from libs.pki.revocation import load_crl
from tests.unit.nsfl_ctl.conftest import assert_user_error, invoke


def pki(*args: str) -> Result:
    return invoke(("pki", *args), {})


def leaf(path: Path) -> x509.Certificate:
    return load_certificates(path.read_bytes())[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def printed_paths(result: Result) -> dict[str, Path]:
    assert result.exit_code == 0, result.output
    lines = [line.split(": ", 1) for line in result.stdout.splitlines() if line.startswith("tls_")]
    return {key: Path(value) for key, value in lines}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    result = pki("init", "--dir", str(directory))
    assert result.exit_code == 0, result.output
    return directory


def test_init_makes_a_root_ca_whose_key_only_its_owner_reads(ca: Path) -> None:
    directory = PkiDirectory(ca)
    root = leaf(directory.ca)
    assert root.subject == root.issuer and leaf(directory.issuer) == root
    assert mode(directory.issuer_key) == 0o600 and mode(ca) == 0o700
    assert directory.trust_domain() == "nsfl.local" and directory.crl.is_file()


def test_issue_writes_a_private_key_and_a_certificate_and_prints_the_tls_settings(ca: Path) -> None:
    paths = printed_paths(pki("issue", "--dir", str(ca), "--control", "selector", "--host", "10.0.0.5",
                              "--host", "selector.example.com"))  # fmt: skip
    assert set(paths) == {"tls_ca", "tls_cert", "tls_key", "tls_crl"}
    assert paths["tls_ca"] == (ca / "ca.pem").resolve() and paths["tls_crl"] == (ca / "crl.pem").resolve()
    assert mode(paths["tls_key"]) == 0o600
    cert = leaf(paths["tls_cert"])
    assert identity_of(cert).uri == "spiffe://nsfl.local/control/selector"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "selector.control.nsfl.local",
        "selector.example.com",
    }
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]


@pytest.mark.parametrize(
    ("options", "uri"),
    [(("--client", "hospital-a"), "spiffe://nsfl.local/client/hospital-a"),
     (("--coordinator", "team-a/digits"), "spiffe://nsfl.local/coordinator/team-a/digits")],
)  # fmt: skip
def test_issue_into_a_folder_of_ones_choice_writes_the_three_files_there(
    ca: Path, tmp_path: Path, options: tuple[str, ...], uri: str
) -> None:
    out = tmp_path / "out"
    paths = printed_paths(pki("issue", "--dir", str(ca), *options, "--days", "2", "--out", str(out)))
    assert (paths["tls_ca"], paths["tls_cert"], paths["tls_key"]) == tuple(
        (out / name).resolve() for name in ("ca.pem", "cert.pem", "key.pem")
    )
    assert (out / "ca.pem").read_bytes() == (ca / "ca.pem").read_bytes() and mode(out / "key.pem") == 0o600
    cert = leaf(out / "cert.pem")
    assert identity_of(cert).uri == uri
    assert 1.9 < (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400 < 2.1


def test_an_intermediate_under_the_users_ca_verifies_to_the_users_root(tmp_path: Path) -> None:
    theirs = create_root("example.org")
    write_atomic(tmp_path / "their-ca.pem", cert_pem(theirs.cert))
    write_atomic(tmp_path / "their-ca-key.pem", key_pem(theirs.key), mode=0o600)
    ca = tmp_path / "ca"
    result = pki("init", "--dir", str(ca), "--trust-domain", "example.org",
                 "--parent-cert", str(tmp_path / "their-ca.pem"), "--parent-key", str(tmp_path / "their-ca-key.pem"))  # fmt: skip
    assert result.exit_code == 0 and "intermediate" in result.output, result.output
    assert (ca / "ca.pem").read_bytes() == cert_pem(theirs.cert)  # peers trust the user's root only
    paths = printed_paths(pki("issue", "--dir", str(ca), "--control", "api-server"))
    chain = load_certificates(paths["tls_cert"].read_bytes())
    assert len(chain) == 2 and chain[1].issuer == theirs.cert.subject
    verifier = (
        PolicyBuilder()
        .store(Store([theirs.cert]))
        .build_server_verifier(x509.DNSName("api-server.control.example.org"))
    )
    verified = verifier.verify(chain[0], chain[1:])
    assert verified[-1] == theirs.cert


def test_show_a_directory_lists_its_ca_and_the_identities_it_issued(ca: Path) -> None:
    pki("issue", "--dir", str(ca), "--client", "alice")
    pki("issue", "--dir", str(ca), "--control", "scheduler")
    result = pki("show", "--dir", str(ca), "-o", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["trustDomain"] == "nsfl.local" and document["root"]["isCa"]
    assert document["root"]["subject"] == document["issuer"]["subject"]
    assert sorted(f["identity"] for f in document["issued"]) == [
        "spiffe://nsfl.local/client/alice", "spiffe://nsfl.local/control/scheduler"
    ]  # fmt: skip
    assert not any(f["revoked"] for f in document["issued"])
    table = pki("show", "--dir", str(ca))
    assert table.exit_code == 0 and "spiffe://nsfl.local/client/alice" in table.stdout


def test_show_a_certificate_tells_its_identity_issuer_serial_validity_and_revocation(ca: Path) -> None:
    cert_file = printed_paths(pki("issue", "--dir", str(ca), "--client", "alice"))["tls_cert"]
    cert = leaf(cert_file)
    alone = json.loads(pki("show", "--cert", str(cert_file), "-o", "json").stdout)
    assert alone["identity"] == "spiffe://nsfl.local/client/alice" and alone["revoked"] is None
    assert alone["serial"] == format(cert.serial_number, "x") and "nsfl root CA" in alone["issuer"]
    assert alone["notAfter"] == cert.not_valid_after_utc.isoformat()
    with_dir = json.loads(pki("show", "--cert", str(cert_file), "--dir", str(ca), "-o", "json").stdout)
    assert with_dir["revoked"] is False
    assert pki("revoke", "--dir", str(ca), "--cert", str(cert_file)).exit_code == 0
    shown = pki("show", "--cert", str(cert_file), "--dir", str(ca))
    assert shown.exit_code == 0 and any(
        line.split() == ["Revoked", "yes"] for line in shown.stdout.splitlines()
    ), shown.stdout


def test_rotate_replaces_key_and_certificate_in_place_and_keeps_the_hosts(ca: Path) -> None:
    before = printed_paths(pki("issue", "--dir", str(ca), "--control", "selector", "--host", "127.0.0.1"))
    old_cert, old_key = leaf(before["tls_cert"]), before["tls_key"].read_bytes()
    after = printed_paths(pki("rotate", "--dir", str(ca), "--control", "selector"))
    assert after == before
    new_cert = leaf(after["tls_cert"])
    assert new_cert.serial_number != old_cert.serial_number and after["tls_key"].read_bytes() != old_key
    assert new_cert.public_key() != old_cert.public_key() and mode(after["tls_key"]) == 0o600
    names = new_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    half_written = [p for p in after["tls_cert"].parent.iterdir() if p.name.startswith(".")]
    assert not half_written


def test_rotate_refuses_files_of_another_identity(ca: Path, tmp_path: Path) -> None:
    pki("issue", "--dir", str(ca), "--client", "alice", "--out", str(tmp_path / "tls"))
    before = (tmp_path / "tls" / "cert.pem").read_bytes()
    result = pki("rotate", "--dir", str(ca), "--client", "bob", "--out", str(tmp_path / "tls"))
    assert_user_error(result, 2, "is not a certificate of spiffe://nsfl.local/client/bob")
    assert (tmp_path / "tls" / "cert.pem").read_bytes() == before


def test_revoking_a_client_revokes_its_certificates_from_before_a_rotation_too(ca: Path) -> None:
    first = leaf(printed_paths(pki("issue", "--dir", str(ca), "--client", "alice"))["tls_cert"])
    second = leaf(printed_paths(pki("rotate", "--dir", str(ca), "--client", "alice"))["tls_cert"])
    bob = leaf(printed_paths(pki("issue", "--dir", str(ca), "--client", "bob"))["tls_cert"])
    result = pki("revoke", "--dir", str(ca), "--client", "alice", "--reason", "laptop stolen")
    assert result.exit_code == 0 and result.output.count("revoked spiffe://nsfl.local/client/alice") == 2
    directory = PkiDirectory(ca)
    revoked = {serial for _, serial in load_crl(directory.crl.read_bytes(), [leaf(directory.ca)])}
    assert revoked == {first.serial_number, second.serial_number} and bob.serial_number not in revoked
    assert {e["reason"] for e in directory.revoked_entries()} == {"laptop stolen"}


def test_a_client_certificate_known_by_serial_only_is_revoked_by_serial(ca: Path) -> None:
    directory = PkiDirectory(ca)
    enrolled = [
        directory.authority().issue(Identity.client("carol"), new_key().public_key()) for _ in range(2)
    ]  # as the API server's enrolment signs them: no file under issued/
    decimal, hexadecimal = str(enrolled[0].serial_number), f"0x{enrolled[1].serial_number:x}"
    result = pki("revoke", "--dir", str(ca), "--client", "carol", "--serial", decimal, "--serial", hexadecimal)
    assert result.exit_code == 0, result.output
    revoked = {serial for _, serial in load_crl(directory.crl.read_bytes(), [leaf(directory.ca)])}
    assert revoked == {c.serial_number for c in enrolled}
    assert {e["identity"] for e in directory.revoked_entries()} == {"spiffe://nsfl.local/client/carol"}


def test_revoking_a_certificate_of_another_ca_is_refused(ca: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki("init", "--dir", str(other))
    stranger = printed_paths(pki("issue", "--dir", str(other), "--client", "alice"))["tls_cert"]
    assert_user_error(
        pki("revoke", "--dir", str(ca), "--cert", str(stranger)), 2, "was not issued by this PKI"
    )


@pytest.mark.parametrize(
    ("args", "exit_code", "fragment"),
    [(("issue", "--dir", "{ca}"), 2, "give exactly one of --control"),
     (("issue", "--dir", "{ca}", "--client", "a", "--control", "selector"), 2, "got --control, --client"),
     (("issue", "--dir", "{ca}", "--client", "a", "--host", "h"), 2, "a client certificate serves nothing"),
     (("issue", "--dir", "{ca}", "--client", "no/slash"), 2, "client id 'no/slash'"),
     (("issue", "--dir", "{ca}", "--coordinator", "digits"), 2, '"<namespace>/<name>"'),
     (("issue", "--dir", "{tmp}/nowhere", "--client", "a"), 3, "pki init --dir"),
     (("rotate", "--dir", "{ca}", "--client", "never-issued"), 3, "to rotate; issue one with"),
     (("init", "--dir", "{ca}"), 4, "a PKI already exists"),
     (("init", "--dir", "{tmp}/new", "--trust-domain", "Not A Domain"), 2, "trust domain"),
     (("init", "--dir", "{tmp}/new", "--parent-cert", "{ca}/ca.pem"), 2, "both --parent-cert and --parent-key"),
     (("init", "--dir", "{tmp}/new", "--parent-cert", "{ca}/ca.pem", "--parent-key", "{ca}/crl.pem"), 2,
      "not an unencrypted PEM private key"),
     (("init", "--dir", "{tmp}/new", "--parent-cert", "{ca}/crl.pem", "--parent-key", "{ca}/issuer-key.pem"), 2,
      "holds no PEM certificate"),
     (("show",), 2, "give --dir DIR, --cert FILE"),
     (("show", "--cert", "{tmp}/missing.pem"), 3, "no certificate file"),
     (("revoke", "--dir", "{ca}"), 2, "exactly one of --cert FILE or --client ID"),
     (("revoke", "--cert", "{ca}/ca.pem"), 2, "needs the PKI directory"),
     (("revoke", "--dir", "{ca}", "--client", "nobody"), 3, "issued no certificate to client 'nobody'"),
     (("revoke", "--client", "carol", "--serial", "12"), 2, "--serial goes with --dir DIR --client ID"),
     (("revoke", "--dir", "{ca}", "--client", "carol", "--serial", "abc"), 2, "decimal number or 0x-prefixed hex")],
)  # fmt: skip
def test_bad_input_is_one_clear_error_line(
    ca: Path, tmp_path: Path, args: tuple[str, ...], exit_code: int, fragment: str
) -> None:
    filled = tuple(a.format(ca=ca, tmp=tmp_path) for a in args)
    assert_user_error(pki(*filled), exit_code, fragment)


def test_a_parent_key_that_is_not_the_parent_certificates_is_refused(tmp_path: Path) -> None:
    theirs, stranger = create_root("example.org"), create_root("example.org")
    write_atomic(tmp_path / "ca.pem", cert_pem(theirs.cert))
    write_atomic(tmp_path / "key.pem", key_pem(stranger.key), mode=0o600)
    result = pki("init", "--dir", str(tmp_path / "ca"), "--parent-cert", str(tmp_path / "ca.pem"),
                 "--parent-key", str(tmp_path / "key.pem"))  # fmt: skip
    assert_user_error(result, 2, "is not the key of --parent-cert")
    assert not (tmp_path / "ca").exists()
