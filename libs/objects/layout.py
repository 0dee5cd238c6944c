"""Where things live in the object store (DESIGN §7: layout by namespace).

Every component builds keys with these functions instead of formatting strings
of its own, so the layout is written down once and a namespace's objects are
always under ``<namespace>/``::

    <ns>/models/<name>/<version>/model.safetensors     registry models
    <ns>/jobs/<job>/rounds/<round>/<name>               per-round globals, deltas, metrics
    <ns>/checkpoints/<job>/<round>.safetensors          resumable checkpoints
    <ns>/outputs/<job>/<name>                           final model, plots, reports

Rounds are zero-padded to six digits so that ``list`` (sorted by key) returns
them in round order.  Namespace, job, model name and version must each be one
key segment; the trailing ``name`` may have several (``plots/loss.png``).
Every result is checked with :func:`~libs.objects.keys.validate_key`, so a
hostile job name cannot climb out of its namespace.
"""

from __future__ import annotations

from libs.errors import InvalidKey
from libs.objects.keys import validate_key, validate_prefix

ROUND_DIGITS = 6


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or value == "" or "/" in value:
        raise InvalidKey(f"the {what} must be one non-empty key segment without '/', got {value!r}")
    return value


def _round(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**ROUND_DIGITS:
        raise InvalidKey(f"the round must be an integer from 0 to {10**ROUND_DIGITS - 1}, got {value!r}")
    return f"{value:0{ROUND_DIGITS}d}"


def model_key(namespace: str, name: str, version: str | int) -> str:
    """The weights of version ``version`` of registry model ``name``."""
    return validate_key(
        f"{_segment(namespace, 'namespace')}/models/{_segment(name, 'model name')}/"
        f"{_segment(str(version), 'model version')}/model.safetensors"
    )


def round_key(namespace: str, job: str, round: int, name: str) -> str:
    """A file of round ``round`` of ``job`` (the global model, a delta, metrics)."""
    return validate_key(f"{round_prefix(namespace, job, round)}{name}")


def round_prefix(namespace: str, job: str, round: int | None = None) -> str:
    """The prefix of one round of ``job``, or of all its rounds when ``round`` is None."""
    base = f"{_segment(namespace, 'namespace')}/jobs/{_segment(job, 'job')}/rounds/"
    return validate_prefix(base if round is None else f"{base}{_round(round)}/")


def checkpoint_key(namespace: str, job: str, round: int) -> str:
    """The checkpoint of ``job`` taken after round ``round``."""
    return validate_key(f"{checkpoint_prefix(namespace, job)}{_round(round)}.safetensors")


def checkpoint_prefix(namespace: str, job: str) -> str:
    """The prefix of every checkpoint of ``job``."""
    return validate_prefix(f"{_segment(namespace, 'namespace')}/checkpoints/{_segment(job, 'job')}/")


def output_key(namespace: str, job: str, name: str) -> str:
    """An output of ``job`` (the final model, a plot, a report)."""
    return validate_key(f"{output_prefix(namespace, job)}{name}")


def output_prefix(namespace: str, job: str) -> str:
    """The prefix of every output of ``job``."""
    return validate_prefix(f"{_segment(namespace, 'namespace')}/outputs/{_segment(job, 'job')}/")


def job_prefixes(namespace: str, job: str) -> tuple[str, ...]:
    """Every prefix that holds objects of ``job``: delete them all to forget the job."""
    return (round_prefix(namespace, job), checkpoint_prefix(namespace, job), output_prefix(namespace, job))
