"""Tensors that travel beside a model or a delta, under reserved names.

Some algorithms send more than the model: SCAFFOLD's server control variate
``c`` goes to every client with the global model, and each client's
control-variate delta ``Delta c_i`` comes back with its model delta; a job's
``broadcast`` extender may ship small files with the model.  Rather than a
second transfer (and a second content id, checksum and resume protocol per
round), these ride in the same safetensors payload under names that start
with :data:`PREFIX`, which no framework produces.  The download stays
content-addressed: the published bytes (model and attachments together) are
what the SHA-256 names.

What a client must *know* (FedProx's ``mu``, SCAFFOLD's run id, local DP's
settings) is no tensor: it travels with the task, typed
(:class:`libs.tasks.spec.AlgorithmSettings`).

The receiving side calls :func:`split` first and validates the model part
against the model exactly as before, so a job without attachments sees no
difference, and an attachment can never be mistaken for a model tensor.

Kinds (the second path segment):

* ``scaffold-c/<tensor>``: the server control variate, one per float tensor
  of the model, same shape and dtype (coordinator -> client);
* ``scaffold-dc/<tensor>``: the client's control-variate delta (client ->
  coordinator);
* ``file/<name>``: a broadcast file as a 1-D ``uint8`` tensor (coordinator ->
  client).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from libs.errors import InvalidWeights

PREFIX = "__nsfl__/"
SERVER_CONTROL = "scaffold-c"
CONTROL_DELTA = "scaffold-dc"
FILE = "file"
KINDS = (SERVER_CONTROL, CONTROL_DELTA, FILE)

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

Attachments = dict[str, dict[str, np.ndarray]]
"""Kind -> (name -> array), e.g. ``{"scaffold-c": {"fc.weight": ...}}``."""


def is_reserved(name: str) -> bool:
    """Whether a tensor name belongs to an attachment, not to a model."""
    return name.startswith(PREFIX)


def join(weights: Mapping[str, np.ndarray], attachments: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """One map holding ``weights`` and every attachment under its reserved name."""
    reserved = [name for name in weights if is_reserved(name)]
    if reserved:
        raise InvalidWeights(f"model tensor names must not start with {PREFIX!r}: {reserved[:3]}")
    joined: dict[str, np.ndarray] = dict(weights)
    for kind, tensors in attachments.items():
        if kind not in KINDS:
            raise InvalidWeights(f"unknown attachment kind {kind!r} (known: {', '.join(KINDS)})")
        for name, array in tensors.items():
            joined[f"{PREFIX}{kind}/{name}"] = array
    return joined


def split(weights: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Attachments]:
    """``(model tensors, attachments by kind)``; an unknown kind is :class:`InvalidWeights`."""
    model: dict[str, np.ndarray] = {}
    attachments: Attachments = {}
    for name, array in weights.items():
        if not is_reserved(name):
            model[name] = array
            continue
        kind, _, rest = name[len(PREFIX) :].partition("/")
        if kind not in KINDS or not rest:
            raise InvalidWeights(f"tensor {name!r} uses the reserved prefix {PREFIX!r} with no known kind")
        attachments.setdefault(kind, {})[rest] = array
    return model, attachments


def file_tensor(data: bytes) -> np.ndarray:
    """A file's bytes as the 1-D ``uint8`` tensor it travels as."""
    return np.frombuffer(bytes(data), dtype=np.uint8).copy()


def file_bytes(tensor: np.ndarray) -> bytes:
    """The bytes of a file that travelled as a tensor."""
    if tensor.dtype != np.uint8 or tensor.ndim != 1:
        raise InvalidWeights(
            f"a broadcast file must be a 1-D uint8 tensor, got {tensor.dtype}{list(tensor.shape)}"
        )
    return tensor.tobytes()
