"""Which namespaces the end user behind a ``JobControl`` call may see: the scheduler's second check.

Only the API server may call ``JobControl``'s user RPCs (the authorisation
table says so, and the guard enforces it from the caller's certificate).
The API server authenticates the end user and passes the namespaces that
user may act in as gRPC metadata :data:`METADATA_KEY`: a comma-separated
list (``team-a,team-b``), or ``*`` for an admin of every namespace.  The
scheduler checks again, so a bug in one place does not expose another
team's jobs: a job outside the scope is ``NotFound`` (as REST shows another
namespace's job, so its existence does not leak), ``ListJobs`` lists only
the scope, and submitting into another namespace is ``PermissionDenied``.

A call without the metadata is refused: an API server that forgot it must
fail loudly rather than act for nobody in particular (or for everybody).
An empty value is a user with no namespaces at all: it sees nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from libs.errors import PermissionDenied, ValidationFailed

METADATA_KEY = "nsfl-namespaces"
ALL = "*"

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class NamespaceScope:
    """The namespaces one end user may act in: every one (``everything``), or exactly ``names``."""

    names: frozenset[str] = frozenset()
    everything: bool = False

    def allows(self, namespace: str) -> bool:
        return self.everything or namespace in self.names

    def __str__(self) -> str:
        return ALL if self.everything else ",".join(sorted(self.names))


def parse_namespaces(value: str) -> NamespaceScope:
    """The scope a :data:`METADATA_KEY` value names: ``*``, or namespace names separated by commas."""
    items = [item.strip() for item in value.split(",")]
    items = [item for item in items if item]
    if ALL in items:
        if len(items) > 1:
            raise ValidationFailed(
                f"metadata {METADATA_KEY!r} is either '*' or a list of namespaces, not both"
            )
        return NamespaceScope(everything=True)
    for item in items:
        if not _NAMESPACE.fullmatch(item):
            raise ValidationFailed(f"metadata {METADATA_KEY!r} names {item[:80]!r}, which is not a namespace")
    return NamespaceScope(frozenset(items))


def scope_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> NamespaceScope:
    """The end user's scope from a call's metadata; refused if the caller passed none (or several)."""
    values = [value for key, value in (metadata or ()) if key.lower() == METADATA_KEY]
    if not values:
        raise PermissionDenied(
            f"JobControl calls act for an end user: pass the user's namespaces in gRPC metadata "
            f"{METADATA_KEY!r} (comma-separated, or '*' for every namespace)"
        )
    if len(values) > 1:
        raise ValidationFailed(
            f"metadata {METADATA_KEY!r} must be given once, it was given {len(values)} times"
        )
    value = values[0]
    return parse_namespaces(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
