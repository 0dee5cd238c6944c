"""The client side of a secure-aggregation round, as a state machine.

One :class:`SecAggClient` serves one round (Bonawitz et al. 2017, Fig. 4):
``advertise_keys`` -> ``share_keys`` -> ``mask_input`` -> ``unmask``
(one-mask mode: ``advertise_keys`` -> ``mask_input``).  Each method takes the
server's message for that stage and returns the client's reply; the carrier
(the task executor) only relays them.

What the client refuses, and why:

* a stage out of order, a replayed stage, or a message of another session
  (:class:`StageOutOfOrder`; its state is untouched);
* a round setup whose model hash differs from the model it was given
  (:class:`ModelMismatch`) or that does not list it (:class:`StageOutOfOrder`);
* a key directory with duplicate indices or keys, keys other than its own
  under its own index, fewer than ``t`` clients, or (one-mask) a missing
  client; with a ``verify_peer`` callback, a bad signature;
* share deliveries that fail authentication or come from outside U1;
* an unmask request that names one client both dropped and surviving, does
  not partition U2, leaves fewer than ``t`` survivors, or calls the client
  itself dropped.  Answering it would let the server unmask a single input.

Protocol violations (:class:`ProtocolViolation`) abort the client for good:
it answers nothing more in this round.  Secrets (``b_u``, private keys,
shares) are dropped as soon as the round is done or aborted.

Signatures are optional: with ``signing_key`` the client signs its keys
(Ed25519 over session, index and both keys); with ``verify_peer`` it checks
every peer's signature.  Without them, the client trusts the server to relay
keys faithfully (the honest-but-curious model); with them, a server that swaps
keys to man-in-the-middle the share encryption is caught.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from libs.errors import ValidationFailed
from libs.privacy.clipping import clip_by_l2_norm
from libs.privacy.noise import DistributedNoise
from libs.secagg.errors import ModelMismatch, ProtocolViolation, StageOutOfOrder
from libs.secagg.key_agreement import KeyPair, RandomBytes, open_sealed, seal, share_associated_data
from libs.secagg.key_agreement import share_encryption_key as share_key
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
    key_signature_payload,
)
from libs.secagg.prg import SEED_BYTES, UInt64Array, add_mask, ring_mask, working_dtype
from libs.secagg.protocol import ClientStage, add_pairwise_masks, pack_share_plaintext, reduce
from libs.secagg.protocol import unpack_share_plaintext as unpack_plaintext
from libs.secagg.shamir import Share, split_secret

Signer = Callable[[bytes], bytes]
PeerVerifier = Callable[[str, bytes, bytes], bool]  # (client id, payload, signature) -> valid?


@dataclass
class _Secrets:
    encryption: KeyPair
    masking: KeyPair
    self_mask_seed: bytes = b""
    own_mask_share: Share | None = None  # u's own share of b_u (it never needs its own s_u^SK share)
    received: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # peer -> (s share, b share)


class SecAggClient:
    """One client's part in one round; see the module docstring for the stages."""

    def __init__(
        self,
        client_id: str,
        *,
        random_bytes: RandomBytes = os.urandom,
        signer: Signer | None = None,
        verify_peer: PeerVerifier | None = None,
    ) -> None:
        self.client_id = client_id
        self._random_bytes = random_bytes
        self._signer = signer
        self._verify_peer = verify_peer
        self.stage = ClientStage.NEW
        self._setup: RoundSetup | None = None
        self._index = 0
        self._secrets: _Secrets | None = None
        self._peers: dict[int, DirectoryEntry] = {}  # U1 (the directory)
        self._contributors: tuple[int, ...] = ()  # U2: whose masks y_u carries

    @property
    def index(self) -> int:
        return self._index

    # -- helpers -------------------------------------------------------------------------------------------

    def _expect(self, stage: ClientStage, session_id: bytes, what: str) -> tuple[RoundSetup, _Secrets]:
        if self._setup is not None and not hmac.compare_digest(session_id, self._setup.session_id):
            raise StageOutOfOrder(f"{what} belongs to a round this client did not join")
        if self.stage is not stage or self._setup is None or self._secrets is None:
            raise StageOutOfOrder(f"{what} is not expected in stage {self.stage.value!r}")
        return self._setup, self._secrets

    def _violation(self, message: str) -> ProtocolViolation:
        self.stage = ClientStage.ABORTED
        self._secrets = None
        return ProtocolViolation(message)

    # -- round 0 -------------------------------------------------------------------------------------------

    def advertise_keys(self, setup: RoundSetup, model_sha256: bytes) -> KeyAdvertisement:
        """Check the setup against the model held, make ``c_u`` and ``s_u``, advertise them."""
        if self.stage is not ClientStage.NEW:
            raise StageOutOfOrder(f"round setup is not expected in stage {self.stage.value!r}")
        if not hmac.compare_digest(setup.model_sha256, model_sha256):
            raise ModelMismatch("the round setup names a different global model than the one received")
        index = setup.index_of(self.client_id)
        if not index:
            raise StageOutOfOrder("this client is not a participant of the round")
        secrets = _Secrets(KeyPair.generate(self._random_bytes), KeyPair.generate(self._random_bytes))
        if secrets.encryption.public == secrets.masking.public:
            raise ProtocolViolation("key generation produced two equal keys")  # a broken random source
        signature = b""
        if self._signer is not None:
            payload = key_signature_payload(
                setup.session_id, index, secrets.encryption.public, secrets.masking.public
            )
            signature = self._signer(payload)
        self._setup, self._index, self._secrets = setup, index, secrets
        self.stage = ClientStage.ADVERTISED
        return KeyAdvertisement(
            setup.session_id, secrets.encryption.public, secrets.masking.public, signature
        )

    def _accept_directory(self, setup: RoundSetup, secrets: _Secrets, directory: KeyDirectory) -> None:
        entries = {entry.index: entry for entry in directory.entries}
        if len(entries) != len(directory.entries):
            raise self._violation("the key directory lists a client twice")
        if any(not 1 <= index <= len(setup.participants) for index in entries):
            raise self._violation("the key directory lists a client outside the round")
        keys = [e.encryption_public_key for e in entries.values()] + [
            e.masking_public_key for e in entries.values()
        ]
        if len(set(keys)) != len(keys):
            raise self._violation("the key directory holds duplicate public keys")
        own = entries.get(self._index)
        if (
            own is None
            or own.encryption_public_key != secrets.encryption.public
            or own.masking_public_key != secrets.masking.public
        ):
            raise self._violation("the key directory does not hold this client's own keys")
        if len(entries) < setup.threshold:
            raise self._violation(f"only {len(entries)} clients advertised keys; threshold {setup.threshold}")
        if self._verify_peer is not None:
            for index, entry in entries.items():
                payload = key_signature_payload(
                    setup.session_id, index, entry.encryption_public_key, entry.masking_public_key
                )
                if not self._verify_peer(setup.participants[index - 1], payload, entry.signature):
                    raise self._violation(f"the keys of client {index} carry no valid signature")
        self._peers = entries

    # -- round 1 -------------------------------------------------------------------------------------------

    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Split ``s_u^SK`` and a fresh ``b_u`` t-of-|U1| and seal each peer's pair of shares."""
        setup, secrets = self._expect(ClientStage.ADVERTISED, directory.session_id, "a key directory")
        if setup.mode != Mode.DOUBLE_MASK:
            raise StageOutOfOrder("one-mask rounds have no share stage")
        self._accept_directory(setup, secrets, directory)
        secrets.self_mask_seed = self._random_bytes(SEED_BYTES)
        holders = sorted(self._peers)
        key_shares = split_secret(secrets.masking.private, setup.threshold, holders, self._random_bytes)
        mask_shares = split_secret(secrets.self_mask_seed, setup.threshold, holders, self._random_bytes)
        secrets.own_mask_share = mask_shares[self._index]
        sealed = []
        for peer in holders:
            if peer == self._index:
                continue
            key = share_key(
                secrets.encryption.private,
                self._peers[peer].encryption_public_key,
                setup.session_id,
                self._index,
                peer,
            )
            plaintext = pack_share_plaintext(self._index, peer, key_shares[peer].y, mask_shares[peer].y)
            associated = share_associated_data(setup.session_id, self._index, peer)
            sealed.append(SealedShares(peer, seal(key, plaintext, associated, self._random_bytes)))
        self.stage = ClientStage.SHARED
        return ShareKeys(setup.session_id, tuple(sealed))

    def _accept_delivery(self, setup: RoundSetup, secrets: _Secrets, delivery: ShareDelivery) -> None:
        for item in delivery.sealed:
            entry = self._peers.get(item.peer)
            if entry is None or item.peer == self._index:
                raise self._violation(f"shares delivered from client {item.peer}, which is not a peer in U1")
            key = share_key(
                secrets.encryption.private,
                entry.encryption_public_key,
                setup.session_id,
                item.peer,
                self._index,
            )
            associated = share_associated_data(setup.session_id, item.peer, self._index)
            try:
                plaintext = open_sealed(key, item.ciphertext, associated)
            except ProtocolViolation as exc:
                raise self._violation(str(exc)) from exc
            sender, recipient, key_share, mask_share = unpack_plaintext(plaintext)
            if (sender, recipient) != (item.peer, self._index):
                raise self._violation("a sealed share names the wrong sender or recipient")
            secrets.received[item.peer] = (key_share, mask_share)
        contributors = (*secrets.received, self._index)
        if len(contributors) < setup.threshold:
            raise self._violation(
                f"only {len(contributors)} clients shared keys; threshold {setup.threshold}"
            )
        self._contributors = tuple(sorted(contributors))

    # -- round 2 -------------------------------------------------------------------------------------------

    def mask_input(self, request: ShareDelivery | KeyDirectory, vector: UInt64Array) -> MaskedInput:
        """``y_u``: the encoded input plus the self mask and the pairwise masks with U2.

        Double-mask: ``request`` is this client's :class:`ShareDelivery`.
        One-mask: it is the :class:`KeyDirectory`, which must list every participant.
        """
        stage = ClientStage.SHARED if isinstance(request, ShareDelivery) else ClientStage.ADVERTISED
        setup, secrets = self._expect(stage, request.session_id, type(request).__name__)
        if (setup.mode == Mode.DOUBLE_MASK) != isinstance(request, ShareDelivery):
            raise StageOutOfOrder(f"a {type(request).__name__} cannot start masking in {setup.mode} mode")
        values = np.asarray(vector)
        if values.dtype != np.uint64 or values.shape != (setup.vector_length,):
            raise ValidationFailed(f"the input must be a uint64 vector of length {setup.vector_length}")
        if np.any(values > ring_mask(setup.ring_bits)):
            raise ValidationFailed(f"the input holds values outside Z_2^{setup.ring_bits}")
        if isinstance(request, ShareDelivery):
            self._accept_delivery(setup, secrets, request)
        else:
            self._accept_directory(setup, secrets, request)
            if len(self._peers) != len(setup.participants):
                raise self._violation("one-mask mode needs every participant; the directory misses some")
            self._contributors = tuple(sorted(self._peers))
        masked = values.astype(working_dtype(setup.ring_bits))  # uint32 for k <= 32: half the work
        if setup.mode == Mode.DOUBLE_MASK:
            add_mask(masked, secrets.self_mask_seed, setup.ring_bits)
        peers = {v: self._peers[v].masking_public_key for v in self._contributors}
        add_pairwise_masks(
            masked, self._index, secrets.masking.private, peers, setup.session_id, setup.ring_bits
        )
        reduce(masked, setup.ring_bits)
        if setup.mode == Mode.ONE_MASK:
            self.stage, self._secrets = ClientStage.DONE, None
        else:
            self.stage = ClientStage.MASKED
        return MaskedInput.pack(setup.session_id, setup.ring_bits, masked)

    def mask_update(
        self,
        request: ShareDelivery | KeyDirectory,
        update: np.ndarray,
        *,
        weight: float = 1.0,
        rng: np.random.Generator | None = None,
        noise: DistributedNoise | None = None,
    ) -> MaskedInput:
        """Encode a flat float update with the round's codec, then :meth:`mask_input` it.

        ``rng`` gives stochastic rounding (None: round to nearest).  With
        ``noise`` (central DP through secure aggregation) the update is first
        clipped to L2 norm ``noise.clip_norm`` and, after weighting, gets
        ``N(0, (noise.std * max_weight)²)`` per element: a weighted client can
        move the sum by ``max_weight * C``, so the noise scales with it.  Keep
        the setup's ``clip_range`` a few noise stds above ``C``, or the
        element-wise clip of the encoding bites into the noise.
        """
        setup = self._setup
        if setup is None:
            raise StageOutOfOrder("no round has been set up")
        values = np.asarray(update, dtype=np.float64).reshape(-1)
        noise_vector = None
        if noise is not None:
            values = clip_by_l2_norm({"update": values}, noise.clip_norm).update["update"]
            generator = rng if rng is not None else np.random.default_rng()
            noise_vector = noise.sample(values.shape[0], generator, scale=setup.max_weight)
        encoded = setup.codec().encode(values, weight=weight, rng=rng, noise=noise_vector)
        return self.mask_input(request, encoded)

    # -- round 3 -------------------------------------------------------------------------------------------

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Shares of ``s_v^SK`` for the dropped and of ``b_v`` for survivors -- never both for one ``v``."""
        setup, secrets = self._expect(ClientStage.MASKED, request.session_id, "an unmask request")
        dropped, survivors = set(request.dropped), set(request.survivors)
        both = dropped & survivors
        if both:
            raise self._violation(f"the server asked for both shares of clients {sorted(both)}")
        if dropped | survivors != set(self._contributors):
            raise self._violation(
                "the dropped and surviving sets do not cover exactly the clients that shared"
            )
        if self._index not in survivors:
            raise self._violation("the server counts this client as dropped")
        if len(survivors) < setup.threshold:
            raise self._violation(f"only {len(survivors)} survivors; threshold {setup.threshold}")
        own_mask_share = secrets.own_mask_share
        if own_mask_share is None:  # unreachable: share_keys sets it on the only way into this stage
            raise StageOutOfOrder("this client holds no shares")
        key_shares = tuple(ShareEntry(v, secrets.received[v][0]) for v in sorted(dropped))
        mask_shares = tuple(
            ShareEntry(v, own_mask_share.y if v == self._index else secrets.received[v][1])
            for v in sorted(survivors)
        )
        self.stage, self._secrets = ClientStage.DONE, None
        return UnmaskResponse(setup.session_id, key_shares, mask_shares)
