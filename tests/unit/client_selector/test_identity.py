"""With mutual TLS, a task manager's certificate common name must equal the client id it registers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme

from client_selector.app import SelectorApp
from client_selector.registry import ClientId
from libs.protos import selector_pb2
from libs.rpc import TlsFiles
from tests.unit.client_selector.fakes import FakeTaskManager, running_selector, settings_for


def write_tls(tmp_path: Path, ca: trustme.CA, name: str, *identities: str) -> TlsFiles:
    leaf = ca.issue_cert(*identities, common_name=name)
    folder = tmp_path / name
    folder.mkdir()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))
    return TlsFiles(ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem")


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_app(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[SelectorApp]:
    server = write_tls(tmp_path, ca, "selector", "127.0.0.1", "localhost")
    settings = settings_for(
        tmp_path / "selector.db", tls_ca=server.ca, tls_cert=server.cert, tls_key=server.key
    )
    async with running_selector(settings) as app:
        yield app


async def test_a_client_whose_certificate_names_it_may_register(
    tls_app: SelectorApp, tmp_path: Path, ca: trustme.CA
) -> None:
    fake = FakeTaskManager(
        f"127.0.0.1:{tls_app.port}", "c1", tls=write_tls(tmp_path, ca, "c1", "c1.clients.nsfl")
    )
    try:
        assert (await fake.connect()).client_id == "c1"
    finally:
        await fake.close()


async def test_a_client_registering_under_another_name_than_its_certificate_is_denied(
    tls_app: SelectorApp, tmp_path: Path, ca: trustme.CA
) -> None:
    fake = FakeTaskManager(
        f"127.0.0.1:{tls_app.port}", "c2", tls=write_tls(tmp_path, ca, "c1", "c1.clients.nsfl")
    )
    try:
        error = await fake.open_and_fail(selector_pb2.ClientMessage(register=fake.register))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "does not match the certificate's common name 'c1'" in (error.details() or "")
    finally:
        await fake.close()
    assert tls_app.selector.record(ClientId("c2")) is None, "a denied client is never registered"
