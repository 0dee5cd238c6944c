"""Identities, issuing, CSR signing, intermediates, revocation lists and enrolment tokens."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from libs.errors import AlreadyExists, PermissionDenied, ValidationFailed
from libs.pki.authority import cert_pem, create_root, identity_of, key_pem, load_certificates, new_key, utcnow
from libs.pki.directory import PkiDirectory
from libs.pki.enrollment import new_token, token_digest
from libs.pki.identity import Identity, IdentityKind
from libs.pki.revocation import RevocationCheck


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://nsfl.local/client/hospital-a",
        "spiffe://example.org/coordinator/team-a/digits",
        "spiffe://nsfl.local/control/api-server",
    ],
)
def test_an_identity_survives_its_uri(uri: str) -> None:
    assert Identity.parse(uri).uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://nsfl.local/client/a",
        "spiffe://nsfl.local/client",
        "spiffe://nsfl.local/control/root",
        "spiffe://nsfl.local/coordinator/Team/x",
        "spiffe://nsfl.local/client/a/b",
        "spiffe://NSFL/client/a",
    ],
)
def test_a_uri_that_names_no_role_is_refused_with_what_is_expected(uri: str) -> None:
    with pytest.raises(ValidationFailed):
        Identity.parse(uri)


def test_servers_have_names_derived_from_their_identity_and_clients_none() -> None:
    assert Identity.coordinator_of("team-a/digits").server_name == "digits.team-a.coordinator.nsfl.local"
    assert Identity.control("selector").server_name == "selector.control.nsfl.local"
    assert Identity.client("a").server_name is None
    assert Identity.coordinator_of("team-a/digits").job_id == "team-a/digits"
    assert Identity.client("a").kind is IdentityKind.CLIENT


def _csr(common_name: str, uri: str) -> bytes:
    key = new_key()
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(Encoding.PEM)


def test_a_signed_request_carries_only_the_identity_it_was_signed_for() -> None:
    authority = create_root("nsfl.local")
    cert = authority.sign_request(
        _csr("scheduler", "spiffe://nsfl.local/control/scheduler"), Identity.client("hospital-a")
    )
    assert identity_of(cert) == Identity.client("hospital-a")
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == []  # a client can never pass as a server
    cert.verify_directly_issued_by(authority.cert)


def test_a_request_with_a_bad_signature_is_refused() -> None:
    pem = _csr("x", "spiffe://nsfl.local/client/x").replace(b"A", b"B", 1)
    with pytest.raises(ValidationFailed):
        create_root("nsfl.local").sign_request(pem, Identity.client("x"))


def test_an_intermediate_under_the_users_ca_issues_certificates_that_chain_to_the_users_root(
    tmp_path: Path,
) -> None:
    theirs = create_root("corp.example")
    (tmp_path / "corp.pem").write_bytes(cert_pem(theirs.cert))
    (tmp_path / "corp-key.pem").write_bytes(key_pem(theirs.key))
    pki = PkiDirectory(tmp_path / "pki")
    pki.init("nsfl.local", parent_cert=tmp_path / "corp.pem", parent_key=tmp_path / "corp-key.pem")
    files = pki.issue(Identity.control("selector"))
    leaf, intermediate = load_certificates(files.cert.read_bytes())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(theirs.cert)
    assert load_certificates(pki.ca.read_bytes()) == [theirs.cert]
    assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pki.issuer_key).st_mode) == 0o600


def test_a_pki_is_not_made_twice_over_itself(tmp_path: Path) -> None:
    PkiDirectory(tmp_path).init("nsfl.local")
    with pytest.raises(AlreadyExists):
        PkiDirectory(tmp_path).init("nsfl.local")


def test_revocation_reaches_a_running_check_and_a_forged_list_does_not(tmp_path: Path) -> None:
    pki = PkiDirectory(tmp_path / "pki")
    authority = pki.init("nsfl.local")
    files = pki.issue(Identity.client("a"))
    cert = load_certificates(files.cert.read_bytes())[0]
    check = RevocationCheck(pki.crl, [authority.cert])
    assert not check.is_revoked(cert)
    pki.revoke(cert, "lost laptop")
    check._next_look = 0  # do not wait for the next look in a unit test
    assert check.is_revoked(cert)
    forged = PkiDirectory(tmp_path / "other")
    forged.init("nsfl.local")
    pki.crl.write_bytes(forged.crl.read_bytes())
    check._next_look = 0
    assert check.is_revoked(cert)  # a list not signed by a trusted CA is refused; the old one stays


def test_an_enrolment_token_is_stored_as_a_digest_and_redeems_once_before_it_expires() -> None:
    now = utcnow()
    secret, record = new_token("hospital-a", dt.timedelta(hours=1), now)
    assert secret not in repr(record) and record.digest == token_digest(secret)
    record.check_redeemable(now)
    with pytest.raises(PermissionDenied, match="expired"):
        record.check_redeemable(now + dt.timedelta(hours=2))
    used = type(record)(**{**record.__dict__, "used_at": now})
    with pytest.raises(PermissionDenied, match="already used"):
        used.check_redeemable(now)
    with pytest.raises(ValidationFailed):
        new_token("hospital-a", dt.timedelta(days=90), now)
