"""The one error tree of nsfl and its catalogue.

Every error that crosses a boundary (REST, gRPC, CLI, kopf) is an
:class:`NsflError` carrying a stable ``code``.  The :data:`CATALOGUE` maps
each code to the HTTP status, the gRPC status, the CLI exit code and a public
message; the translators at each boundary only read the catalogue, so a code
means the same thing everywhere.

Why a catalogue instead of one exception class per status: components raise
what they mean (``NotFound``, ``ChecksumMismatch``) and never think about
transports; adding a code forces one entry here, and a unit test fails if an
error class names a code that has no entry.

``message`` is written for the user: it says what is wrong and how to fix it,
and it must never hold secrets.  Internal detail (tracebacks, peer addresses)
goes to the logs, never into ``message`` or ``details``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class CatalogueEntry:
    """How one error code shows at every boundary."""

    http_status: int
    grpc_status: str  # the name of a grpc.StatusCode member; libs.errors imports no grpc
    exit_code: int
    public_message: str


# Exit codes follow a simple scheme: 1 generic, 2 usage/validation,
# 3 not found, 4 conflict/state, 5 auth, 6 unavailable, 7 integrity.
CATALOGUE: dict[str, CatalogueEntry] = {
    "Internal": CatalogueEntry(500, "INTERNAL", 1, "internal error; see the service logs"),
    "ValidationFailed": CatalogueEntry(400, "INVALID_ARGUMENT", 2, "the request is not valid"),
    "UnknownSetting": CatalogueEntry(400, "INVALID_ARGUMENT", 2, "unknown configuration key"),
    "InvalidSetting": CatalogueEntry(400, "INVALID_ARGUMENT", 2, "invalid configuration value"),
    "InvalidWeights": CatalogueEntry(400, "INVALID_ARGUMENT", 2, "the weights are not valid"),
    "CorruptPayload": CatalogueEntry(400, "DATA_LOSS", 7, "the payload is corrupt or truncated"),
    "ChecksumMismatch": CatalogueEntry(400, "DATA_LOSS", 7, "the payload does not match its checksum"),
    "PathOutsideRoot": CatalogueEntry(400, "INVALID_ARGUMENT", 2, "the path is outside the allowed roots"),
    "InvalidKey": CatalogueEntry(400, "INVALID_ARGUMENT", 2, "the key is not valid"),
    "Unauthenticated": CatalogueEntry(401, "UNAUTHENTICATED", 5, "authentication is required"),
    "PermissionDenied": CatalogueEntry(403, "PERMISSION_DENIED", 5, "permission denied"),
    "NotFound": CatalogueEntry(404, "NOT_FOUND", 3, "not found"),
    "AlreadyExists": CatalogueEntry(409, "ALREADY_EXISTS", 4, "it already exists"),
    "VersionConflict": CatalogueEntry(409, "ABORTED", 4, "it was changed concurrently; retry"),
    "InvalidState": CatalogueEntry(409, "FAILED_PRECONDITION", 4, "not allowed in the current state"),
    "PayloadTooLarge": CatalogueEntry(413, "RESOURCE_EXHAUSTED", 2, "the payload is too large"),
    "Unavailable": CatalogueEntry(503, "UNAVAILABLE", 6, "a dependency is unavailable; retry later"),
    "DeadlineExceeded": CatalogueEntry(504, "DEADLINE_EXCEEDED", 6, "the operation timed out"),
    "InsufficientClients": CatalogueEntry(409, "FAILED_PRECONDITION", 4, "not enough clients"),
    "UpdateRejected": CatalogueEntry(400, "FAILED_PRECONDITION", 4, "the update was rejected"),
    "TaskFailed": CatalogueEntry(500, "ABORTED", 1, "the task failed"),
}


class NsflError(Exception):
    """Root of every nsfl error.  ``code`` must be a key of :data:`CATALOGUE`."""

    code: ClassVar[str] = "Internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    @property
    def entry(self) -> CatalogueEntry:
        return CATALOGUE[self.code]

    def to_json(self) -> dict[str, Any]:
        """The REST error body of DESIGN §6."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def __str__(self) -> str:
        return self.message


class ValidationFailed(NsflError):
    code = "ValidationFailed"


class UnknownSetting(NsflError):
    code = "UnknownSetting"


class InvalidSetting(NsflError):
    code = "InvalidSetting"


class InvalidWeights(NsflError):
    code = "InvalidWeights"


class CorruptPayload(NsflError):
    code = "CorruptPayload"


class ChecksumMismatch(NsflError):
    code = "ChecksumMismatch"


class PathOutsideRoot(NsflError):
    code = "PathOutsideRoot"


class InvalidKey(NsflError):
    code = "InvalidKey"


class Unauthenticated(NsflError):
    code = "Unauthenticated"


class PermissionDenied(NsflError):
    code = "PermissionDenied"


class NotFound(NsflError):
    code = "NotFound"


class AlreadyExists(NsflError):
    code = "AlreadyExists"


class VersionConflict(NsflError):
    code = "VersionConflict"


class InvalidState(NsflError):
    code = "InvalidState"


class PayloadTooLarge(NsflError):
    code = "PayloadTooLarge"


class Unavailable(NsflError):
    code = "Unavailable"


class DeadlineExceeded(NsflError):
    code = "DeadlineExceeded"


class InsufficientClients(NsflError):
    code = "InsufficientClients"


class UpdateRejected(NsflError):
    code = "UpdateRejected"


class TaskFailed(NsflError):
    code = "TaskFailed"


_BY_CODE: dict[str, type[NsflError]] = {}


def _index(cls: type[NsflError]) -> None:
    _BY_CODE.setdefault(cls.code, cls)
    for sub in cls.__subclasses__():
        _index(sub)


def error_class(code: str) -> type[NsflError]:
    """The most general class for ``code`` (used to rebuild errors from the wire)."""
    _index(NsflError)
    return _BY_CODE.get(code, NsflError)


def from_wire(code: str, message: str, details: dict[str, Any] | None = None) -> NsflError:
    """Rebuild an error received from another component."""
    return error_class(code)(message, details=details)
