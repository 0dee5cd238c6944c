"""How commands print: rich tables for people, ``-o json|yaml`` for scripts.

Every listing command hands :func:`emit` the data it got from the API and a
list of :class:`Column` s.  With ``-o table`` (the default) only the columns
are shown, formatted for reading (ages, short digests, ``3/5``); with
``-o json`` or ``-o yaml`` the *whole* API document is printed unchanged,
so a script sees every field and never parses a table.

Consoles are made per call on the current ``sys.stdout``/``sys.stderr``
rather than once at import: click's test runner swaps the streams, and a
console bound at import would write to the wrong one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "yaml")


@dataclass(frozen=True)
class Column:
    """A table column: its header and how to read a cell from one row of API data."""

    header: str
    cell: Callable[[Any], Any]
    no_wrap: bool = False


def stdout_console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=False)


def output_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """The ``-o/--output table|json|yaml`` option, as parameter ``output``."""
    return click.option(
        "-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True,
        help="How to print: a table for people, json or yaml (the full API document) for scripts.",
    )(function)  # fmt: skip


def emit(
    data: Any, output: str, *, rows: Sequence[Any] | None = None, columns: Sequence[Column] = ()
) -> None:
    """Print ``data``: as a document for json/yaml, else ``rows`` (default: ``data``) as a table."""
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    elif output == "yaml":
        click.echo(yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True), nl=False)
    else:
        print_table(rows if rows is not None else data, columns)


def print_table(
    rows: Sequence[Any], columns: Sequence[Column], *, empty: str = "No resources found."
) -> None:
    if not rows:
        click.echo(empty)
        return
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(column.header, no_wrap=column.no_wrap, overflow="fold")
    for row in rows:
        table.add_row(*(text(column.cell(row)) for column in columns))
    stdout_console().print(table)


def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A two-column ``field  value`` view of one resource."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in pairs:
        table.add_row(name, text(value))
    stdout_console().print(table)


def text(value: Any) -> str:
    """A cell's text: empty for nothing, compact JSON for structures."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "nan"
    if isinstance(value, (list, tuple)):
        return ", ".join(text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def age(timestamp: Any, now: float | None = None) -> str:
    """``5s``, ``3m``, ``2h``, ``4d`` since a Unix timestamp (empty when unknown)."""
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        return ""
    seconds = max(0, int((time.time() if now is None else now) - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def size(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


def short_digest(value: Any) -> str:
    return value[:12] if isinstance(value, str) else ""


def _plain(value: Any) -> Any:
    """JSON data as YAML can dump it safely (tuples and other sequences as lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
