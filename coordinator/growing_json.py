"""JSON of lists that only grow (a job's round history, its checkpoints), each item encoded once.

A coordinator writes its whole history into ``status.json`` and into every
checkpoint, once per round.  Encoding it all again each time makes a round
cost more the longer the job has run (and a job's total cost quadratic in its
rounds).  :class:`GrowingListEncoder` keeps the JSON of each item once it is
*settled* and encodes only the last few again (a round's record still changes
one round later, when its evaluation arrives: :mod:`coordinator.piggyback`),
so a write costs one string join.  A list replaced or shortened is encoded
anew.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class GrowingListEncoder:
    def __init__(self, unsettled: int = 2) -> None:
        self.unsettled = unsettled
        self._items: list[Any] | None = None
        self._encoded: list[str] = []

    def encode(self, items: list[Any]) -> str:
        if items is not self._items or len(items) < len(self._encoded):
            self._items, self._encoded = items, []
        settled = max(0, len(items) - self.unsettled)
        while len(self._encoded) < settled:
            self._encoded.append(dumps(items[len(self._encoded)]))
        return "[" + ",\n".join([*self._encoded[:settled], *(dumps(item) for item in items[settled:])]) + "]"


def encode_object(value: Mapping[str, Any], lists: Mapping[str, GrowingListEncoder]) -> str:
    """``value`` as a JSON object, its growing lists through their encoders."""
    rest = dumps({k: v for k, v in value.items() if k not in lists})
    parts = [rest[1:-1]] if rest != "{}" else []
    parts += [f"{json.dumps(name)}: {encoder.encode(value[name])}" for name, encoder in lists.items() if name in value]
    return "{" + ", ".join(parts) + "}\n"
