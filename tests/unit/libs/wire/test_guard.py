"""The wire end to end on loopback: mutual TLS, the guard's decisions, revocation, downgrade, rotation."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from cryptography import x509

from libs.pki.authority import cert_pem, key_pem, new_key, utcnow
from libs.pki.directory import write_issued
from libs.protos import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from libs.wire import Wire, WireSettings, current_caller
from tests.fixtures.pki import TestPki


class JobControl(scheduler_pb2_grpc.JobControlServicer):
    async def GetJob(
        self, request: scheduler_pb2.JobRef, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.JobReply:
        caller = current_caller()
        return scheduler_pb2.JobReply(job_json=caller.uri if caller else "anonymous")

    async def ReportProgress(
        self, request: scheduler_pb2.ProgressReport, context: grpc.aio.ServicerContext
    ) -> common_pb2.Ack:
        return common_pb2.Ack(ok=True)


@pytest.fixture
async def scheduler(test_pki: TestPki) -> AsyncIterator[tuple[Wire, int]]:
    wire = test_pki.wire(test_pki.identity("scheduler"))
    server = wire.server()
    scheduler_pb2_grpc.add_JobControlServicer_to_server(JobControl(), server)
    port = wire.add_port(server, "127.0.0.1:0")
    await server.start()
    yield wire, port
    await server.stop(None)


async def call(wire: Wire, port: int, method: str = "GetJob", **fields: object) -> str:
    async with wire.channel(f"127.0.0.1:{port}", wire.control("scheduler")) as channel:
        stub = scheduler_pb2_grpc.JobControlStub(channel)
        if method == "GetJob":
            return (await stub.GetJob(scheduler_pb2.JobRef(), timeout=5)).job_json
        reply = await stub.ReportProgress(scheduler_pb2.ProgressReport(**fields), timeout=5)  # type: ignore[arg-type]
        return reply.message


async def test_the_api_server_is_served_and_named_by_its_certificate(test_pki: TestPki, scheduler) -> None:
    _, port = scheduler
    api = test_pki.wire(test_pki.identity("api-server"))
    assert await call(api, port) == "spiffe://nsfl.local/control/api-server"


@pytest.mark.parametrize("who", [("client", "alice"), ("coordinator", "default", "digits"), ("selector",)])
async def test_roles_the_table_does_not_name_are_denied(test_pki: TestPki, scheduler, who) -> None:
    _, port = scheduler
    wire = test_pki.wire(test_pki.identity(*who))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(wire, port)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_coordinator_reports_only_its_own_job(test_pki: TestPki, scheduler) -> None:
    _, port = scheduler
    wire = test_pki.wire(test_pki.identity("coordinator", "default", "digits"))
    await call(wire, port, "ReportProgress", job_id="default/digits")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(wire, port, "ReportProgress", job_id="other/digits")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot act on job" in (caught.value.details() or "")


async def test_plaintext_and_strangers_are_refused_at_the_handshake(other_pki: TestPki, scheduler) -> None:
    _, port = scheduler
    for wire in (Wire.insecure(), other_pki.wire(other_pki.identity("api-server"))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(wire, port)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_server_answering_with_another_identity_is_not_trusted(test_pki: TestPki, scheduler) -> None:
    _, port = scheduler
    api = test_pki.wire(test_pki.identity("api-server"))
    async with api.channel(f"127.0.0.1:{port}", api.control("selector")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await scheduler_pb2_grpc.JobControlStub(channel).GetJob(scheduler_pb2.JobRef(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_revoked_certificate_is_refused_from_the_next_call(
    test_pki: TestPki, tmp_path, scheduler
) -> None:
    _, port = scheduler
    identity = test_pki.identity("client", "mallory")
    authority = test_pki.directory.authority()
    cert = write_issued(authority, identity, tmp_path / "cert.pem", tmp_path / "key.pem")
    wire = Wire.from_settings(
        WireSettings(
            tls_ca=test_pki.directory.ca, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem"
        )
    )
    test_pki.directory.revoke(x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes()), "test")
    assert cert.serial_number in {int(e["serial"]) for e in test_pki.directory.revoked_entries()}
    await asyncio.sleep(0.6)  # the servers look at the CRL at most every 0.5 s
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(wire, port)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (caught.value.details() or "")


async def test_an_expired_certificate_is_refused(test_pki: TestPki, tmp_path, scheduler) -> None:
    _, port = scheduler
    authority = test_pki.directory.authority()
    identity = test_pki.identity("api-server")
    key = new_key()
    past = utcnow() - dt.timedelta(days=3)
    cert = authority.issue(identity, key.public_key(), days=1, now=past)
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    (tmp_path / "cert.pem").write_bytes(cert_pem(cert))
    wire = Wire.from_settings(
        WireSettings(
            tls_ca=test_pki.directory.ca, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem"
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(wire, port)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_server_keeps_its_certificate_while_a_rotation_has_renamed_only_one_file(
    test_pki: TestPki, tmp_path
) -> None:
    from libs.wire.tls import ServerCertificates, TlsFiles

    identity = test_pki.identity("selector")
    authority = test_pki.directory.authority()
    write_issued(authority, identity, tmp_path / "cert.pem", tmp_path / "key.pem")
    certificates = ServerCertificates(
        TlsFiles(test_pki.directory.ca, tmp_path / "cert.pem", tmp_path / "key.pem")
    )
    write_issued(authority, identity, tmp_path / "new-cert.pem", tmp_path / "new-key.pem")
    (tmp_path / "new-cert.pem").replace(tmp_path / "cert.pem")  # the key not renamed yet
    assert certificates.fetch() is None and certificates.reloads == 0
    (tmp_path / "new-key.pem").replace(tmp_path / "key.pem")
    assert certificates.fetch() is not None and certificates.reloads == 1
