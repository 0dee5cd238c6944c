"""A coordinator's ``ReportProgress`` call, parsed: what the scheduler's wire fields say, typed.

The coordinator sends its round and checkpoint records as JSON text (one
object per field, docs/contracts.md); :func:`parse_report` checks that each
is a JSON object (and that a revised round is one of the job's rounds) and
names it by its record type from :mod:`libs.records`.  What a report then
does to the job is :class:`~job_scheduler.coordinators.Coordinators`' business.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from libs.errors import ValidationFailed
from libs.json_values import JsonObject
from libs.records import CheckpointRecord, RoundRecord, as_checkpoint, as_round_record

_Record = TypeVar("_Record")


@dataclass(frozen=True)
class Report:
    """A ``ReportProgress`` call, parsed."""

    job_id: str
    token: str
    state: str
    reason: str
    round: int
    rounds: int
    round_record: RoundRecord | None
    checkpoint: CheckpointRecord | None
    revised_rounds: tuple[RoundRecord, ...] = ()  # earlier records, now with their evaluation
    earlier_checkpoints: tuple[CheckpointRecord, ...] = ()  # stored before ``checkpoint``, oldest first


def parse_report(
    job_id: str,
    token: str,
    state: str,
    reason: str,
    round_number: int,
    rounds: int,
    round_json: str,
    checkpoint_json: str,
    revised_rounds_json: Sequence[str] = (),
    earlier_checkpoints_json: Sequence[str] = (),
) -> Report:
    """A :class:`Report` from the wire fields; ``ValidationFailed`` for JSON that is not an object."""
    revised: list[RoundRecord] = []
    for index, text in enumerate(revised_rounds_json):
        record = _json_object(text, f"revised_rounds_json[{index}]") or {}
        number = record.get("round")
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number <= round_number:
            raise ValidationFailed(
                f"revised_rounds_json[{index}] must be a round record whose round is 1..{round_number}"
            )
        revised.append(as_round_record(record))
    earlier = [
        as_checkpoint(_json_object(text, f"earlier_checkpoints_json[{index}]") or {})
        for index, text in enumerate(earlier_checkpoints_json)
    ]
    if earlier and not checkpoint_json:
        raise ValidationFailed("earlier_checkpoints_json needs checkpoint_json (the newest checkpoint)")
    return Report(
        job_id=job_id,
        token=token,
        state=state,
        reason=reason,
        round=round_number,
        rounds=rounds,
        round_record=_optional(as_round_record, _json_object(round_json, "round_json")),
        checkpoint=_optional(as_checkpoint, _json_object(checkpoint_json, "checkpoint_json")),
        revised_rounds=tuple(revised),
        earlier_checkpoints=tuple(earlier),
    )


def _optional(typed: Callable[[JsonObject], _Record], value: JsonObject | None) -> _Record | None:
    return None if value is None else typed(value)


def _json_object(text: str, what: str) -> JsonObject | None:
    """The JSON object ``text`` holds (None if empty): the wire's records, checked only for being objects."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ValidationFailed(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValidationFailed(f"{what} must be a JSON object")
    return value
