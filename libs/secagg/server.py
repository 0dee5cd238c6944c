"""The server side of a secure-aggregation round, as a state machine.

The coordinator feeds each client's message to ``receive_*`` with the
identity its transport authenticated, and calls ``close_*`` when a stage's
deadline passes or every expected client has answered.  Each ``close_*``
returns what to send next, or raises :class:`RoundAborted` when fewer than
``t`` clients remain (one-mask: when any client is missing).  Bonawitz et al.
2017, Fig. 4, with the client sets:

    U1 -- advertised keys           (close_advertising -> KeyDirectory to U1)
    U2 -- sent their shares         (close_sharing -> one ShareDelivery per member of U2)
    U3 -- sent masked inputs        (close_masked_input -> UnmaskRequest to U3)
    U4 -- answered the unmasking    (finish -> the sum of the inputs of U3)

The masked inputs are folded into one running sum as they arrive, so memory
stays at one vector whatever the number of clients (DESIGN §5).  At the end
the server rebuilds ``b_v`` of each survivor and ``s_u^SK`` of each client
that dropped after sharing from the first ``t`` responders' shares (one set
of Lagrange coefficients for all secrets), checks each rebuilt key against
the advertised public key, and removes the masks.  If fewer than ``t``
clients answer the unmasking, it has fewer than ``t`` shares of anything and
learns nothing beyond the masked inputs.

A message that breaks the rules (wrong stage, unknown sender, duplicate,
wrong shape, keys already used by another client) raises and leaves the state
as it was: the sender is simply not counted.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from libs.errors import PermissionDenied, UpdateRejected, ValidationFailed
from libs.secagg.errors import RoundAborted, StageOutOfOrder
from libs.secagg.key_agreement import KeyPair
from libs.secagg.messages import (
    DirectoryEntry,
    KeyAdvertisement,
    KeyDirectory,
    MaskedInput,
    Mode,
    RoundSetup,
    SealedShares,
    ShareDelivery,
    ShareEntry,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from libs.secagg.prg import UInt64Array, add_mask, working_dtype
from libs.secagg.protocol import ServerStage, add_pairwise_masks, reduce
from libs.secagg.quantize import DecodedSum
from libs.secagg.shamir import combine_with_coefficients, lagrange_coefficients_at_zero


@dataclass(frozen=True)
class AggregateResult:
    """The unmasked sum ``Σ_{u∈U3} x_u mod 2^k`` and who is in it."""

    total: UInt64Array
    contributors: tuple[str, ...]

    def decode(self, setup: RoundSetup) -> DecodedSum:
        """``Σ w_i x_i`` and ``Σ w_i`` under the round's fixed-point codec."""
        return setup.codec().decode(self.total)


class SecAggServer:
    """The server's part in one round; see the module docstring for the stages."""

    def __init__(self, setup: RoundSetup) -> None:
        self.setup = setup
        self.stage = ServerStage.COLLECTING_KEYS
        self.abort_reason: str | None = None
        self._keys: dict[int, KeyAdvertisement] = {}  # U1
        self._sealed: dict[int, dict[int, bytes]] = {}  # U2: sender -> recipient -> ciphertext
        # uint32 for rings up to 32 bits: wraps mod 2^32, which 2^k divides, at half the memory traffic
        self._total: np.ndarray = np.zeros(setup.vector_length, dtype=working_dtype(setup.ring_bits))
        self._inputs: set[int] = set()  # U3
        self._request: UnmaskRequest | None = None
        self._responses: dict[int, UnmaskResponse] = {}  # U4
        self._result: AggregateResult | None = None

    # -- helpers -------------------------------------------------------------------------------------------

    def _check(self, stage: ServerStage, sender: str, session_id: bytes, what: str) -> int:
        if self.stage is ServerStage.ABORTED:
            raise RoundAborted(self.abort_reason or "aborted")
        if self.stage is not stage:
            raise StageOutOfOrder(f"{what} is not expected while the server is {self.stage.value}")
        if not hmac.compare_digest(session_id, self.setup.session_id):
            raise StageOutOfOrder(f"{what} belongs to another round")
        index = self.setup.index_of(sender)
        if not index:
            raise PermissionDenied(f"{sender!r} is not a participant of this round")
        return index

    def abort(self, reason: str) -> RoundAborted:
        """Abort the round for good (also for the coordinator's own reasons); returns the error to raise."""
        self.stage, self.abort_reason = ServerStage.ABORTED, reason
        self._total = np.zeros(0, dtype=np.uint64)
        self._responses.clear()
        return RoundAborted(reason)

    def _require(self, count: int, stage_name: str) -> None:
        n, t = len(self.setup.participants), self.setup.threshold
        if self.setup.mode == Mode.ONE_MASK and count < n:
            raise self.abort(f"only {count} of {n} clients {stage_name}; one-mask mode needs every client")
        if count < t:
            raise self.abort(f"only {count} of {n} clients {stage_name}; threshold {t}")

    def _ids(self, indices: set[int] | list[int]) -> tuple[str, ...]:
        return tuple(self.setup.participants[i - 1] for i in sorted(indices))

    # -- round 0 -------------------------------------------------------------------------------------------

    def receive_keys(self, sender: str, message: KeyAdvertisement) -> None:
        index = self._check(ServerStage.COLLECTING_KEYS, sender, message.session_id, "a key advertisement")
        if index in self._keys:
            raise UpdateRejected(f"{sender!r} already advertised its keys")
        used = {k.encryption_public_key for k in self._keys.values()} | {
            k.masking_public_key for k in self._keys.values()
        }
        mine = {message.encryption_public_key, message.masking_public_key}
        if len(mine) != 2 or mine & used:
            raise UpdateRejected(f"{sender!r} advertised keys already in use in this round")
        self._keys[index] = message

    def close_advertising(self) -> KeyDirectory:
        """The key directory of U1, broadcast to every member of U1."""
        self._check_stage(ServerStage.COLLECTING_KEYS)
        self._require(len(self._keys), "advertised keys")
        entries = tuple(
            DirectoryEntry(i, k.encryption_public_key, k.masking_public_key, k.signature)
            for i, k in sorted(self._keys.items())
        )
        next_stage = ServerStage.COLLECTING_SHARES
        if self.setup.mode == Mode.ONE_MASK:
            next_stage = ServerStage.COLLECTING_INPUTS
        self.stage = next_stage
        return KeyDirectory(self.setup.session_id, entries)

    def _check_stage(self, stage: ServerStage) -> None:
        if self.stage is ServerStage.ABORTED:
            raise RoundAborted(self.abort_reason or "aborted")
        if self.stage is not stage:
            raise StageOutOfOrder(f"cannot close that stage while the server is {self.stage.value}")

    @property
    def advertised(self) -> tuple[str, ...]:
        """U1 as client ids."""
        return self._ids(list(self._keys))

    # -- round 1 -------------------------------------------------------------------------------------------

    def receive_shares(self, sender: str, message: ShareKeys) -> None:
        index = self._check(ServerStage.COLLECTING_SHARES, sender, message.session_id, "shares")
        if index not in self._keys:
            raise UpdateRejected(f"{sender!r} did not advertise keys in this round")
        if index in self._sealed:
            raise UpdateRejected(f"{sender!r} already sent its shares")
        recipients = {s.peer for s in message.sealed}
        if recipients != set(self._keys) - {index}:
            raise UpdateRejected(f"{sender!r} must send one sealed share pair to each other client in U1")
        self._sealed[index] = {s.peer: s.ciphertext for s in message.sealed}

    def close_sharing(self) -> dict[str, ShareDelivery]:
        """Route the sealed shares: one delivery per member of U2, from every other member of U2."""
        self._check_stage(ServerStage.COLLECTING_SHARES)
        self._require(len(self._sealed), "shared their keys")
        deliveries = {}
        for recipient in sorted(self._sealed):
            sealed = tuple(
                SealedShares(sender, ciphertexts[recipient])
                for sender, ciphertexts in sorted(self._sealed.items())
                if sender != recipient
            )
            deliveries[self.setup.participants[recipient - 1]] = ShareDelivery(self.setup.session_id, sealed)
        self.stage = ServerStage.COLLECTING_INPUTS
        return deliveries

    # -- round 2 -------------------------------------------------------------------------------------------

    def receive_masked_input(self, sender: str, message: MaskedInput) -> None:
        index = self._check(ServerStage.COLLECTING_INPUTS, sender, message.session_id, "a masked input")
        expected = self._sealed if self.setup.mode == Mode.DOUBLE_MASK else self._keys
        if index not in expected:
            raise UpdateRejected(f"{sender!r} did not take part in the earlier stages")
        if index in self._inputs:
            raise UpdateRejected(f"{sender!r} already sent its masked input")
        if message.ring_bits != self.setup.ring_bits:
            raise UpdateRejected(f"{sender!r} masked in a {message.ring_bits}-bit ring")
        try:
            vector = message.unpack()
        except ValidationFailed as exc:
            raise UpdateRejected(f"{sender!r} sent a malformed masked input: {exc}") from exc
        if vector.shape != self._total.shape:
            raise UpdateRejected(
                f"{sender!r} sent {vector.shape[0]} elements, expected {self._total.shape[0]}"
            )
        np.add(self._total, vector, out=self._total, casting="unsafe")  # vector < 2^k: nothing is lost
        self._inputs.add(index)

    def close_masked_input(self) -> UnmaskRequest | None:
        """The unmask request for U3 (double-mask), or None when the sum is ready (one-mask)."""
        self._check_stage(ServerStage.COLLECTING_INPUTS)
        self._require(len(self._inputs), "sent masked inputs")
        if self.setup.mode == Mode.ONE_MASK:
            self.stage = ServerStage.FINISHED
            return None
        dropped = tuple(sorted(set(self._sealed) - self._inputs))
        self._request = UnmaskRequest(self.setup.session_id, dropped, tuple(sorted(self._inputs)))
        self.stage = ServerStage.COLLECTING_UNMASKING
        return self._request

    # -- round 3 -------------------------------------------------------------------------------------------

    def receive_unmasking(self, sender: str, message: UnmaskResponse) -> None:
        index = self._check(
            ServerStage.COLLECTING_UNMASKING, sender, message.session_id, "an unmask response"
        )
        request = self._current_request()
        if index not in request.survivors:
            raise UpdateRejected(f"{sender!r} is not a survivor of this round")
        if index in self._responses:
            raise UpdateRejected(f"{sender!r} already answered the unmasking")
        if {e.owner for e in message.masking_key_shares} != set(request.dropped) or {
            e.owner for e in message.self_mask_shares
        } != set(request.survivors):
            raise UpdateRejected(f"{sender!r} did not send exactly the requested shares")
        self._responses[index] = message

    def finish(self) -> AggregateResult:
        """Remove the masks and return the sum, or abort if fewer than ``t`` answered."""
        if self._result is not None:
            return self._result
        if self.stage is ServerStage.COLLECTING_UNMASKING:
            self._require(len(self._responses), "answered the unmasking")
            self._unmask()
        self._check_stage(ServerStage.FINISHED)
        total = reduce(self._total, self.setup.ring_bits).astype(np.uint64)
        self._result = AggregateResult(total, self._ids(self._inputs))
        return self._result

    def _unmask(self) -> None:
        request, setup = self._current_request(), self.setup
        responders = sorted(self._responses)[: setup.threshold]
        coefficients = lagrange_coefficients_at_zero(responders)
        key_shares = [_by_owner(self._responses[r].masking_key_shares) for r in responders]
        mask_shares = [_by_owner(self._responses[r].self_mask_shares) for r in responders]

        def rebuild(owner: int, tables: list[dict[int, int]]) -> bytes:
            try:
                return combine_with_coefficients([table[owner] for table in tables], coefficients)
            except ValidationFailed as exc:
                raise self.abort(f"the shares of client {owner} do not reconstruct its secret") from exc

        for survivor in request.survivors:
            add_mask(self._total, rebuild(survivor, mask_shares), setup.ring_bits, sign=-1)
        survivors: Mapping[int, bytes] = {v: self._keys[v].masking_public_key for v in request.survivors}
        for dropped in request.dropped:
            masking = KeyPair.from_private(rebuild(dropped, key_shares))
            if masking.public != self._keys[dropped].masking_public_key:
                raise self.abort(
                    f"the rebuilt masking key of client {dropped} does not match its advertised key"
                )
            add_pairwise_masks(
                self._total, dropped, masking.private, survivors, setup.session_id, setup.ring_bits
            )
        self.stage = ServerStage.FINISHED

    def _current_request(self) -> UnmaskRequest:
        if self._request is None:
            raise StageOutOfOrder("no unmask request has been sent")
        return self._request


def _by_owner(entries: tuple[ShareEntry, ...]) -> dict[int, int]:
    return {entry.owner: int.from_bytes(entry.share, "big") for entry in entries}
