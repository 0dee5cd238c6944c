"""Errors of the secure-aggregation protocol.

Each class narrows a code of :mod:`libs.errors` (so the boundary translators
and the catalogue need no new entry) while letting callers tell a refusal on
principle from a transient ordering problem:

* :class:`ProtocolViolation` (``PermissionDenied``): a peer or the server
  asked for something the protocol forbids -- both kinds of share for one
  client, duplicate keys, ciphertexts that fail authentication.  The client
  that raises it has aborted the round and will not answer again.
* :class:`StageOutOfOrder` (``InvalidState``): a message arrived for a stage
  the state machine is not in, or for a round it did not join.  Its state is
  unchanged, so a late duplicate does not kill a healthy round.
* :class:`ModelMismatch` (``ValidationFailed``): the round setup names a
  global model other than the one the client was given.
* :class:`RoundAborted` (``UpdateRejected``): too few clients are left to
  finish the round (fewer than the threshold, or any dropout in one-mask
  mode).  ``details["reason"]`` repeats the reason for machine readers.

Messages never hold key material or shares.
"""

from __future__ import annotations

from libs.errors import InvalidState, PermissionDenied, UpdateRejected, ValidationFailed


class ProtocolViolation(PermissionDenied):
    """A request the protocol forbids; the refusing party has aborted."""


class StageOutOfOrder(InvalidState):
    """A message for a stage (or a round) the state machine is not in."""


class ModelMismatch(ValidationFailed):
    """The round setup's model hash differs from the model the client holds."""


class RoundAborted(UpdateRejected):
    """The round cannot finish; the server learns no sum."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"secure aggregation round aborted: {reason}", details={"reason": reason})
        self.reason = reason
