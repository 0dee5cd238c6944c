"""A client refuses what the protocol forbids, and a server drops bad messages."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from libs.errors import InvalidState, PermissionDenied, UpdateRejected, ValidationFailed
from libs.secagg.client import SecAggClient
from libs.secagg.errors import ModelMismatch, ProtocolViolation, StageOutOfOrder
from libs.secagg.messages import (
    DirectoryEntry,
    KeyDirectory,
    Mode,
    SealedShares,
    ShareDelivery,
    UnmaskRequest,
)
from libs.secagg.protocol import ClientStage
from libs.secagg.server import SecAggServer
from libs.secagg.simulation import make_setup
from tests.unit.libs.secagg.harness import run_until_masked, seeded_bytes


def test_a_request_for_both_shares_of_one_client_is_refused_and_the_client_goes_silent() -> None:
    state, _ = run_until_masked(5, 3)
    client = state.clients["client-1"]
    malicious = UnmaskRequest(state.setup.session_id, dropped=(2,), survivors=(1, 2, 3, 4, 5))
    with pytest.raises(ProtocolViolation, match="both shares"):
        client.unmask(malicious)
    assert client.stage is ClientStage.ABORTED
    honest = UnmaskRequest(state.setup.session_id, dropped=(), survivors=(1, 2, 3, 4, 5))
    with pytest.raises(StageOutOfOrder):
        client.unmask(honest)


@pytest.mark.parametrize(
    ("dropped", "survivors", "reason"),
    [
        ((1,), (2, 3, 4, 5), "as dropped"),
        ((), (1, 2, 3, 4), "cover exactly"),
        ((2, 3, 4), (1, 5), "threshold"),
        ((), (1, 2, 3, 4, 5, 6), "cover exactly"),
    ],
)
def test_unmask_requests_that_break_the_rules_are_refused(
    dropped: tuple[int, ...], survivors: tuple[int, ...], reason: str
) -> None:
    state, _ = run_until_masked(5, 3)
    with pytest.raises(ProtocolViolation, match=reason):
        state.clients["client-1"].unmask(UnmaskRequest(state.setup.session_id, dropped, survivors))


def test_stages_out_of_order_are_refused_without_losing_state() -> None:
    setup = make_setup(3, 2, vector_length=4, random_bytes=seeded_bytes(1))
    client = SecAggClient("client-1", random_bytes=seeded_bytes(2))
    directory = KeyDirectory(setup.session_id, ())
    with pytest.raises(StageOutOfOrder):
        client.share_keys(directory)
    with pytest.raises(StageOutOfOrder):
        client.unmask(UnmaskRequest(setup.session_id, (), (1, 2)))
    client.advertise_keys(setup, setup.model_sha256)
    with pytest.raises(StageOutOfOrder):
        client.advertise_keys(setup, setup.model_sha256)  # a replayed setup
    with pytest.raises(StageOutOfOrder):
        client.mask_input(ShareDelivery(setup.session_id, ()), np.zeros(4, np.uint64))
    with pytest.raises(StageOutOfOrder):
        client.mask_input(directory, np.zeros(4, np.uint64))  # one-mask step in a double-mask round
    assert client.stage is ClientStage.ADVERTISED


def test_messages_of_a_round_the_client_did_not_join_are_refused() -> None:
    state, _ = run_until_masked(4, 3)
    other_session = hashlib.sha256(b"another round").digest()
    with pytest.raises(StageOutOfOrder, match="did not join"):
        state.clients["client-1"].unmask(UnmaskRequest(other_session, (), (1, 2, 3, 4)))
    outsider = SecAggClient("client-99")
    with pytest.raises(StageOutOfOrder, match="not a participant"):
        outsider.advertise_keys(state.setup, state.setup.model_sha256)


def test_a_model_hash_mismatch_is_refused() -> None:
    setup = make_setup(3, 2, vector_length=4, model_sha256=hashlib.sha256(b"global model v1").digest())
    client = SecAggClient("client-1")
    with pytest.raises(ModelMismatch):
        client.advertise_keys(setup, hashlib.sha256(b"global model v2").digest())
    assert client.stage is ClientStage.NEW


def _advertised(n: int = 4) -> tuple[list[SecAggClient], KeyDirectory]:
    setup = make_setup(n, n // 2 + 1, vector_length=4, random_bytes=seeded_bytes(5))
    clients = [
        SecAggClient(cid, random_bytes=seeded_bytes(10 + i)) for i, cid in enumerate(setup.participants)
    ]
    ads = [client.advertise_keys(setup, setup.model_sha256) for client in clients]
    entries = tuple(
        DirectoryEntry(i + 1, ad.encryption_public_key, ad.masking_public_key) for i, ad in enumerate(ads)
    )
    return clients, KeyDirectory(setup.session_id, entries)


def test_duplicate_public_keys_from_different_peers_are_refused() -> None:
    clients, directory = _advertised()
    copied = dataclasses.replace(
        directory.entries[2], masking_public_key=directory.entries[1].masking_public_key
    )
    forged = KeyDirectory(directory.session_id, (*directory.entries[:2], copied, directory.entries[3]))
    with pytest.raises(ProtocolViolation, match="duplicate"):
        clients[0].share_keys(forged)
    assert clients[0].stage is ClientStage.ABORTED


def test_a_directory_that_replaces_the_clients_own_keys_or_repeats_an_index_is_refused() -> None:
    clients, directory = _advertised()
    swapped = (dataclasses.replace(directory.entries[0], encryption_public_key=bytes(range(32))),)
    with pytest.raises(ProtocolViolation, match="own keys"):
        clients[0].share_keys(KeyDirectory(directory.session_id, swapped + directory.entries[1:]))
    repeated = (
        *directory.entries,
        dataclasses.replace(directory.entries[3], encryption_public_key=bytes(32)),
    )
    with pytest.raises(ProtocolViolation, match="twice"):
        clients[1].share_keys(KeyDirectory(directory.session_id, repeated))
    with pytest.raises(ProtocolViolation, match="threshold"):
        clients[2].share_keys(KeyDirectory(directory.session_id, directory.entries[1:3]))


def test_ciphertexts_that_fail_authentication_abort_the_client() -> None:
    clients, directory = _advertised(3)
    shared = [client.share_keys(directory) for client in clients]
    to_first = [SealedShares(i + 1, s.sealed[0].ciphertext) for i, s in enumerate(shared) if i > 0]
    bad = SealedShares(
        to_first[0].peer, to_first[0].ciphertext[:-1] + bytes([to_first[0].ciphertext[-1] ^ 1])
    )
    with pytest.raises(ProtocolViolation, match="authentication"):
        clients[0].mask_input(ShareDelivery(directory.session_id, (bad, to_first[1])), np.zeros(4, np.uint64))
    assert clients[0].stage is ClientStage.ABORTED
    # A sealed share re-addressed to someone else does not open either.
    misrouted = SealedShares(3, shared[1].sealed[1].ciphertext)  # from 2 to 3, claimed as from 3 to 2
    with pytest.raises(ProtocolViolation):
        clients[1].mask_input(ShareDelivery(directory.session_id, (misrouted,)), np.zeros(4, np.uint64))


def test_signed_keys_catch_a_server_that_swaps_a_peers_keys() -> None:
    setup = make_setup(3, 2, vector_length=4, random_bytes=seeded_bytes(8))
    identities = {cid: Ed25519PrivateKey.generate() for cid in setup.participants}
    public = {cid: key.public_key() for cid, key in identities.items()}

    def verify(cid: str, payload: bytes, signature: bytes) -> bool:
        try:
            public[cid].verify(signature, payload)
        except Exception:
            return False
        return True

    clients = [
        SecAggClient(cid, signer=identities[cid].sign, verify_peer=verify) for cid in setup.participants
    ]
    server = SecAggServer(setup)
    for client in clients:
        server.receive_keys(client.client_id, client.advertise_keys(setup, setup.model_sha256))
    directory = server.close_advertising()
    clients[0].share_keys(directory)  # genuine keys verify
    swapped = dataclasses.replace(  # the server slips its own keys in for client-2's
        directory.entries[1],
        encryption_public_key=bytes(range(1, 33)),
        masking_public_key=bytes(range(2, 34)),
    )
    forged = KeyDirectory(setup.session_id, (directory.entries[0], swapped, directory.entries[2]))
    with pytest.raises(ProtocolViolation, match="signature"):
        clients[2].share_keys(forged)


def test_the_server_drops_bad_messages_and_keeps_its_state() -> None:
    setup = make_setup(3, 2, vector_length=4, random_bytes=seeded_bytes(4))
    server = SecAggServer(setup)
    clients = [SecAggClient(cid) for cid in setup.participants]
    ads = [client.advertise_keys(setup, setup.model_sha256) for client in clients]
    server.receive_keys("client-1", ads[0])
    with pytest.raises(UpdateRejected, match="already"):
        server.receive_keys("client-1", ads[0])
    with pytest.raises(UpdateRejected, match="already in use"):
        server.receive_keys("client-2", ads[0])  # another client's keys
    with pytest.raises(PermissionDenied):
        server.receive_keys("mallory", ads[1])
    with pytest.raises(InvalidState):
        server.close_sharing()
    server.receive_keys("client-2", ads[1])
    server.receive_keys("client-3", ads[2])
    directory = server.close_advertising()
    with pytest.raises(InvalidState):
        server.receive_keys("client-3", ads[2])
    shares = [client.share_keys(directory) for client in clients]
    with pytest.raises(UpdateRejected, match="each other client"):
        server.receive_shares("client-1", dataclasses.replace(shares[0], sealed=shares[0].sealed[:1]))
    for client, share in zip(clients, shares, strict=True):
        server.receive_shares(client.client_id, share)
    deliveries = server.close_sharing()
    masked = clients[0].mask_input(deliveries["client-1"], np.zeros(4, np.uint64))
    with pytest.raises(UpdateRejected, match="elements"):
        server.receive_masked_input("client-1", dataclasses.replace(masked, vector=masked.vector[:-4]))
    server.receive_masked_input("client-1", masked)
    with pytest.raises(UpdateRejected, match="already"):
        server.receive_masked_input("client-1", masked)


def test_thresholds_below_a_majority_or_one_mask_thresholds_below_n_are_refused() -> None:
    with pytest.raises(ValidationFailed):
        make_setup(6, 3, vector_length=4)
    with pytest.raises(ValidationFailed):
        make_setup(6, 7, vector_length=4)
    with pytest.raises(ValidationFailed):
        make_setup(6, 5, vector_length=4, mode=Mode.ONE_MASK)
