"""Structured logs that carry job, round and client ids.

Components log with ``logging.getLogger(__name__)`` and %-style arguments as
usual.  Ids are attached in one of two ways:

* :func:`log_context` sets them for the current task (a ``contextvars``
  value, so concurrent asyncio tasks each keep their own), for example around
  one round of a coordinator or one task of a task manager;
* ``logger.info("...", extra={"job": ..., "round": ...})`` for one line.

:func:`configure_logging` installs one handler on the root logger that writes
either human-readable text or one JSON object per line (``json_output=True``,
for log shippers).  Both formats show the ids; the text format appends them
as ``key=value`` pairs.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

CONTEXT_KEYS = ("component", "job", "round", "client", "task", "attempt")

# Never mutated in place: each log_context() sets a new dict, so concurrent tasks cannot see each other's ids.
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("nsfl_log_context", default=None)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Attach ids (``job=``, ``round=``, ``client=`` ...) to every record logged inside."""
    unknown = set(ids) - set(CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"unknown log context keys: {sorted(unknown)}")
    merged = {**(_context.get() or {}), **{k: v for k, v in ids.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copies the context ids onto each record (``extra=`` wins over the context)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _ids(record: logging.LogRecord) -> dict[str, Any]:
    return {key: getattr(record, key) for key in CONTEXT_KEYS if getattr(record, key, None) is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_ids(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _ids(record)
        if ids:
            line += " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]"
        return line


def configure_logging(
    level: str | int = "INFO", *, json_output: bool = False, component: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Install the nsfl handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_nsfl", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_output else TextFormatter())
    handler.addFilter(ContextFilter())
    handler._nsfl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    if component:
        _context.set({**(_context.get() or {}), "component": component})
