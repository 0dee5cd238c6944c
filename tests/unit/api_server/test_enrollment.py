"""Enrolment tokens, enrolment with a CSR, and client revocation, end to end over REST.

The API server's ``pki_dir`` is the session's test PKI, so the certificates it issues chain to
the same CA the fake gRPC servers trust, and a revocation lands in the CRL those servers check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from api_server.enrollment import Enrollment
from libs.files import write_atomic
from libs.pki.authority import PrivateKey, identity_of, key_pem, load_certificates, new_key
from libs.pki.directory import PkiDirectory
from libs.protos import selector_pb2, selector_pb2_grpc
from libs.store import DocumentStore
from libs.wire import Wire, WireSettings
from tests.unit.api_server.conftest import (
    ADMIN,
    EDITOR_A,
    VIEWER_A,
    Client,
    Fakes,
    bearer,
    make_settings,
    running_client,
)

TOKENS = "/api/v1/enrollment-tokens"
ENROLL = "/api/v1/enroll"


def revoke_path(client_id: str) -> str:
    return f"/api/v1/clients/{client_id}/revoke"


def certificate_request(key: PrivateKey, *, asking_for: str | None = None) -> str:
    """A PEM CSR; ``asking_for`` puts another identity's URI (and a server name) in it."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whoever")])
    )
    if asking_for is not None:
        names = [x509.UniformResourceIdentifier(asking_for), x509.DNSName("scheduler.control.nsfl.local")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


async def create_token(client: Client, client_id: str, ttl: float = 600) -> dict[str, Any]:
    response = await client.post(
        TOKENS, json={"clientId": client_id, "ttlSeconds": ttl}, headers=bearer(ADMIN)
    )
    assert response.status == 201, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await response.json()
    return body


async def redeem(client: Client, token: str, csr: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(ENROLL, json={"token": token, "csr": csr})
    return response.status, await response.json()


async def test_a_token_is_shown_once_and_only_its_hash_is_stored(
    client: Client, store: DocumentStore
) -> None:
    created = await create_token(client, "hospital-hash", ttl=600)
    secret = created["token"]
    assert secret.startswith("nsfl-enroll-") and created["clientId"] == "hospital-hash"
    expires = dt.datetime.fromisoformat(created["expiresAt"])
    assert 590 <= (expires - dt.datetime.now(dt.UTC)).total_seconds() <= 600
    digest = hashlib.sha256(secret.encode()).hexdigest()
    (stored,) = await store.find("enrollment_tokens", {"clientId": "hospital-hash"})
    assert stored.key == digest and secret not in repr(stored.data)
    listed = await (await client.get(TOKENS, headers=bearer(ADMIN))).json()
    (entry,) = [t for t in listed["tokens"] if t["clientId"] == "hospital-hash"]
    assert entry["state"] == "pending" and entry["createdBy"] == "admin"
    assert secret not in str(listed) and digest not in str(listed)


async def test_a_client_enrols_with_a_csr_and_gets_exactly_its_identity_chained_to_the_ca(
    client: Client, fakes: Fakes
) -> None:
    created = await create_token(client, "hospital-z")
    key = new_key()
    status, body = await redeem(client, created["token"], certificate_request(key))
    assert status == 201, body
    leaf, *chain = load_certificates(body["certificate"].encode())
    (ca,) = load_certificates(body["ca"].encode())
    assert body["ca"].encode() == fakes.pki.directory.ca.read_bytes()
    assert chain == [] and leaf.issuer == ca.subject  # the test PKI issues from its root
    leaf.verify_directly_issued_by(ca)  # raises unless the CA's key signed it
    assert leaf.public_key() == key.public_key()
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://nsfl.local/client/hospital-z"
    ]
    assert sans.get_values_for_type(x509.DNSName) == []  # a client serves nothing
    assert (body["clientId"], body["identity"]) == ("hospital-z", "spiffe://nsfl.local/client/hospital-z")
    assert body["serial"] == str(leaf.serial_number)


async def test_a_csr_asking_for_another_identity_still_gets_the_tokens(client: Client) -> None:
    created = await create_token(client, "hospital-y")
    csr = certificate_request(new_key(), asking_for="spiffe://nsfl.local/control/scheduler")
    status, body = await redeem(client, created["token"], csr)
    assert status == 201, body
    (leaf, *_) = load_certificates(body["certificate"].encode())
    assert identity_of(leaf).uri == "spiffe://nsfl.local/client/hospital-y"
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == []


async def test_a_token_redeems_once_even_when_two_redeem_at_the_same_time(
    client: Client, store: DocumentStore
) -> None:
    created = await create_token(client, "hospital-twice")
    results = await asyncio.gather(
        *(redeem(client, created["token"], certificate_request(new_key())) for _ in range(2))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201, 403], results
    refused = next(body for status, body in results if status == 403)
    assert "already used" in refused["error"]["message"]
    assert await store.count("client_certificates", {"clientId": "hospital-twice"}) == 1
    status, body = await redeem(client, created["token"], certificate_request(new_key()))
    assert status == 403 and "already used" in body["error"]["message"]
    listed = await (await client.get(TOKENS, headers=bearer(ADMIN))).json()
    (entry,) = [t for t in listed["tokens"] if t["clientId"] == "hospital-twice"]
    assert entry["state"] == "used" and entry["serial"] is not None


async def test_an_expired_or_unknown_token_is_refused(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    past = Enrollment(store, fakes.pki.directory, "nsfl.local", clock=lambda: an_hour_ago)
    secret, _ = await past.create_token("hospital-late", 60, "admin")
    status, body = await redeem(client, secret, certificate_request(new_key()))
    assert status == 403 and "expired" in body["error"]["message"]
    status, body = await redeem(client, "nsfl-enroll-made-up", certificate_request(new_key()))
    assert status == 401 and body["error"]["message"] == "the enrolment token is not valid"
    assert await store.count("client_certificates", {"clientId": "hospital-late"}) == 0


async def test_a_bad_csr_is_400_and_leaves_the_token_usable(client: Client) -> None:
    created = await create_token(client, "hospital-retry")
    status, body = await redeem(client, created["token"], "-----BEGIN CERTIFICATE REQUEST-----\nnope\n")
    assert status == 400 and "CSR" in body["error"]["message"]
    status, _ = await redeem(client, created["token"], certificate_request(new_key()))
    assert status == 201


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"ttlSeconds": 60}, "body.clientId"),
        ({"clientId": "../etc", "ttlSeconds": 60}, "body.clientId"),
        ({"clientId": "ok", "ttlSeconds": 0}, "body.ttlSeconds"),
        ({"clientId": "ok", "ttlSeconds": 31 * 86400}, "body.ttlSeconds"),
        ({"clientId": "ok", "extra": 1}, "body"),
    ],
)
async def test_a_bad_token_request_is_400_naming_the_field(
    client: Client, body: dict[str, Any], names: str
) -> None:
    response = await client.post(TOKENS, json=body, headers=bearer(ADMIN))
    assert response.status == 400
    assert names in (await response.json())["error"]["message"]


async def test_a_bad_enrolment_request_is_400_naming_the_field(client: Client) -> None:
    for body, names in (({"token": "t"}, "body.csr"), ({"csr": "x"}, "body.token"), ({}, "body")):
        response = await client.post(ENROLL, json=body)
        assert response.status == 400
        assert names in (await response.json())["error"]["message"]


async def test_only_an_admin_may_create_list_or_revoke(client: Client) -> None:
    for token in (EDITOR_A, VIEWER_A):
        for method, path in (("POST", TOKENS), ("GET", TOKENS), ("POST", revoke_path("hospital-a"))):
            response = await client.request(method, path, json={"clientId": "x"}, headers=bearer(token))
            assert response.status == 403, (token, method, path)
    assert (await client.post(TOKENS, json={"clientId": "x"})).status == 401
    listed = await (await client.get(TOKENS, headers=bearer(ADMIN))).json()
    assert all(t["clientId"] != "x" for t in listed["tokens"])


async def list_clients_as(wire: Wire, port: int) -> grpc.StatusCode:
    """What a guarded server says to this certificate: refused by the table, or as revoked."""
    async with wire.channel(f"127.0.0.1:{port}", wire.control("selector")) as channel:
        try:
            await selector_pb2_grpc.ClientSelectorStub(channel).ListClients(
                selector_pb2.ListClientsRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def enrolled_wire(tmp_path: Path, key: PrivateKey, body: dict[str, Any], pki: PkiDirectory) -> Wire:
    """The wire a task manager builds from what enrolment gave it."""
    ca, cert, private = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    write_atomic(ca, body["ca"].encode())
    write_atomic(cert, body["certificate"].encode())
    write_atomic(private, key_pem(key), mode=0o600)
    settings = WireSettings(tls_ca=ca, tls_cert=cert, tls_key=private, tls_crl=pki.crl)
    return Wire.from_settings(settings, role="client")


async def test_revoking_a_client_puts_its_certificates_in_the_crl_that_servers_reload(
    client: Client, fakes: Fakes, tmp_path: Path
) -> None:
    pki = fakes.pki.directory
    key = new_key()
    status, body = await redeem(
        client, (await create_token(client, "hospital-gone"))["token"], certificate_request(key)
    )
    assert status == 201
    pending = await create_token(client, "hospital-gone")  # not redeemed yet: cancelled by the revocation
    wire = enrolled_wire(tmp_path, key, body, pki)
    # Before: the guard knows it as client/hospital-gone, which may not list clients.
    assert await list_clients_as(wire, fakes.selector_port) == grpc.StatusCode.PERMISSION_DENIED

    response = await client.post(
        revoke_path("hospital-gone"), json={"reason": "laptop stolen"}, headers=bearer(ADMIN)
    )
    assert response.status == 200, await response.text()
    revoked = await response.json()
    assert [c["serial"] for c in revoked["revokedCertificates"]] == [body["serial"]]
    assert revoked["revokedTokens"] == 1
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(body["serial"])) is not None
    assert any(
        e["serial"] == body["serial"] and e["reason"] == "laptop stolen" for e in pki.revoked_entries()
    )

    deadline = time.monotonic() + 5
    while await list_clients_as(wire, fakes.selector_port) != grpc.StatusCode.UNAUTHENTICATED:
        assert time.monotonic() < deadline, "the server did not pick up the new CRL"
        await asyncio.sleep(0.1)
    status, refused = await redeem(client, pending["token"], certificate_request(new_key()))
    assert status == 403 and "revoked" in refused["error"]["message"]


async def test_a_read_only_pki_cancels_the_tokens_and_says_where_to_revoke_the_certificates(
    tmp_path: Path, fakes: Fakes
) -> None:
    pki = tmp_path / "pki"
    shutil.copytree(fakes.pki.directory.root, pki)
    async with running_client(make_settings(tmp_path, fakes, pki_dir=pki)) as client:
        status, body = await redeem(
            client, (await create_token(client, "hospital-ro"))["token"], certificate_request(new_key())
        )
        assert status == 201
        pending = await create_token(client, "hospital-ro")
        crl_before = (pki / "crl.pem").read_bytes()
        (pki / "revoked.json").unlink()
        (pki / "revoked.json").mkdir()  # cannot be read or replaced, as on a read-only mount
        response = await client.post(revoke_path("hospital-ro"), headers=bearer(ADMIN))
        assert response.status == 409
        error = (await response.json())["error"]
        assert "nsfl-ctl pki revoke" in error["message"] and "cancelled" in error["message"]
        assert error["details"] == {
            "clientId": "hospital-ro",
            "serials": [body["serial"]],
            "revokedTokens": 1,
        }
        assert (pki / "crl.pem").read_bytes() == crl_before
        status, refused = await redeem(client, pending["token"], certificate_request(new_key()))
        assert status == 403 and "revoked" in refused["error"]["message"]


async def test_revoking_a_client_enrolment_never_saw_is_404(client: Client) -> None:
    response = await client.post(revoke_path("never-enrolled"), headers=bearer(ADMIN))
    assert response.status == 404
    assert "nsfl-ctl pki revoke" in (await response.json())["error"]["message"]
    bad = await client.post(revoke_path("..bad"), headers=bearer(ADMIN))
    assert bad.status == 400 and "path.clientId" in (await bad.json())["error"]["message"]


async def test_without_pki_dir_enrolment_and_revocation_are_503_saying_to_set_it(
    tmp_path: Path, fakes: Fakes
) -> None:
    async with running_client(make_settings(tmp_path, fakes, pki_dir=None)) as client:
        for method, path, headers in (
            ("POST", TOKENS, bearer(ADMIN)), ("GET", TOKENS, bearer(ADMIN)),
            ("POST", ENROLL, {}), ("POST", revoke_path("hospital-a"), bearer(ADMIN)),
        ):  # fmt: skip
            response = await client.request(method, path, json={}, headers=headers)
            assert response.status == 503, (method, path)
            assert "pki_dir" in (await response.json())["error"]["message"]
        assert (await client.get("/api/v1/clients", headers=bearer(VIEWER_A))).status == 200
