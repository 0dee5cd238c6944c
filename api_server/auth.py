"""Bearer tokens, their namespaces and roles (DESIGN §9).

The token file (``token_file`` setting) is YAML::

    tokens:
      - name: team-a-ci          # shown in logs, never the token
        token: "s3cret-at-least-16-chars"
        namespaces: [team-a]     # or ["*"] for every namespace
        role: editor             # viewer | editor | admin
      - name: auditor
        sha256: "<hex SHA-256 of the token>"   # instead of the plain token
        namespaces: ["*"]
        role: viewer
        expires: 2030-01-31T00:00:00Z          # optional, RFC 3339 with a time zone

Decisions, and why:

* **Tokens are kept hashed in memory** (SHA-256) and a presented token is
  hashed and compared with *every* known hash through
  :func:`hmac.compare_digest`, without stopping at the first match, so
  neither the comparison nor the position of a match shows in the timing.
  The file may itself hold only hashes (``sha256:``), so it need not carry
  secrets at all.
* **Another namespace is a 404, not a 403**: a caller must not learn that a
  namespace or a job it cannot see exists.  So the namespace check runs
  before the role check, and both before any lookup.
* **Roles**: ``viewer`` reads; ``editor`` also creates, changes and deletes
  jobs and models in its namespaces; ``admin`` may do what an editor may and
  is the role for operators.  An admin over every namespace (``["*"]``)
  alone may use the platform-wide endpoints: enrolment tokens, client
  revocation, and the namespaces with the tokens that reach them.  Those
  act on shared things (a client serves every namespace, the PKI is one),
  so an admin of one namespace may not; it gets 403 like a viewer would.
  A viewer that tries to change something gets 403: it can already see the
  resource, so hiding it would only confuse.
* **A token may expire** (``expires``): from that instant it is refused
  with 401 and a message saying it expired, so a short-lived token for a
  contractor or a CI run needs no one to remember to remove it.  The time
  must carry its zone (``Z`` or ``+02:00``): a local time would mean
  something different on each server.
* The file is read once at start; a bad file stops the server with a
  message naming the entry (a typo must not silently drop a token).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import logging
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from libs.errors import InvalidSetting, NotFound, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

ALL_NAMESPACES = "*"
MIN_TOKEN_LENGTH = 16
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_ENTRY_KEYS = frozenset({"name", "token", "sha256", "namespaces", "role", "expires"})


class Role(enum.StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def may_write(self) -> bool:
        return self is not Role.VIEWER


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name, role and namespaces (``*`` for all), and when it expires."""

    name: str
    role: Role
    namespaces: frozenset[str]
    expires_at: dt.datetime | None = None

    @property
    def all_namespaces(self) -> bool:
        return ALL_NAMESPACES in self.namespaces

    @property
    def is_platform_admin(self) -> bool:
        """An admin over every namespace: the one caller of the platform-wide endpoints."""
        return self.role is Role.ADMIN and self.all_namespaces

    def sees(self, namespace: str) -> bool:
        return self.all_namespaces or namespace in self.namespaces

    def require_namespace(self, namespace: str) -> None:
        """``NotFound`` for a namespace the caller may not see: its existence is not revealed."""
        if not self.sees(namespace):
            raise NotFound(f"namespace {namespace!r} not found", details={"namespace": namespace})

    def require_write(self) -> None:
        if not self.role.may_write:
            raise PermissionDenied(
                f"token {self.name!r} has the role {self.role.value!r}, which may only read; "
                "an editor or admin token is needed to change anything"
            )

    def require_platform_admin(self) -> None:
        if not self.is_platform_admin:
            raise PermissionDenied(
                f"token {self.name!r} is not an admin over every namespace; this endpoint acts on the "
                "whole platform and needs a token with role 'admin' and namespaces ['*']"
            )


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenRegistry:
    """The known tokens, by hash.  Lookups take the same time whichever token matches."""

    def __init__(
        self,
        entries: Sequence[tuple[bytes, Caller]],
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        digests = [digest for digest, _ in entries]
        if len(set(digests)) != len(digests):
            raise InvalidSetting("the token file lists the same token twice")
        self._entries = list(entries)
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def callers(self) -> list[Caller]:
        """Every token's caller (names, roles, namespaces; never a token or a hash)."""
        return [caller for _, caller in self._entries]

    def lookup(self, token: str) -> Caller | None:
        presented = hash_token(token)
        found: Caller | None = None
        for digest, caller in self._entries:
            if hmac.compare_digest(presented, digest):
                found = caller
        return found

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller of an ``Authorization`` header; ``Unauthenticated`` if it names no known token."""
        if not authorization:
            raise Unauthenticated("this endpoint needs a bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        caller = self.lookup(token)
        if caller is None:
            raise Unauthenticated("the bearer token is not valid")
        if caller.expires_at is not None and self._clock() >= caller.expires_at:
            raise Unauthenticated(
                f"the bearer token expired at {caller.expires_at.isoformat()}; ask for a new one"
            )
        return caller


def load_token_file(path: Path) -> TokenRegistry:
    """Read and check a token file; ``InvalidSetting`` naming the entry that is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise InvalidSetting(f"cannot read the token file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and "token:" in text:
        log.warning("the token file %s holds plain tokens and is readable by others; chmod 600 it", path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSetting(f"the token file {path} is not valid YAML: {exc}") from exc
    if not isinstance(document, Mapping) or not isinstance(document.get("tokens"), list):
        raise InvalidSetting(f"the token file {path} must hold a mapping with a 'tokens' list")
    unknown = set(document) - {"tokens"}
    if unknown:
        raise InvalidSetting(
            f"the token file {path} has unknown keys: {', '.join(sorted(map(str, unknown)))}"
        )
    entries = [_parse_entry(path, index, entry) for index, entry in enumerate(document["tokens"])]
    if not entries:
        log.warning("the token file %s lists no tokens: every request will be refused", path)
    return TokenRegistry(entries)


def _parse_entry(path: Path, index: int, entry: Any) -> tuple[bytes, Caller]:
    where = f"token file {path}, tokens[{index}]"
    if not isinstance(entry, Mapping):
        raise InvalidSetting(f"{where} must be a mapping")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise InvalidSetting(f"{where} has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    name = entry.get("name", f"token-{index}")
    if not isinstance(name, str) or not name.strip():
        raise InvalidSetting(f"{where}: 'name' must be a non-empty string")
    digest = _digest_of(where, entry)
    try:
        role = Role(str(entry.get("role")))
    except ValueError:
        raise InvalidSetting(
            f"{where}: 'role' must be one of {', '.join(r.value for r in Role)}, got {entry.get('role')!r}"
        ) from None
    namespaces = entry.get("namespaces")
    if not isinstance(namespaces, list) or not namespaces:
        raise InvalidSetting(f"{where}: 'namespaces' must be a non-empty list of namespaces or ['*']")
    for namespace in namespaces:
        if namespace != ALL_NAMESPACES and not (isinstance(namespace, str) and _DNS_LABEL.match(namespace)):
            raise InvalidSetting(f"{where}: namespace {namespace!r} is not a DNS-1123 label or '*'")
    expires = _expiry_of(where, entry.get("expires"))
    return digest, Caller(name=name, role=role, namespaces=frozenset(namespaces), expires_at=expires)


def _expiry_of(where: str, value: Any) -> dt.datetime | None:
    """``expires`` as an aware datetime: YAML gives a datetime for a bare timestamp, a str if quoted."""
    if value is None:
        return None
    when: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        raise InvalidSetting(
            f"{where}: 'expires' must be an RFC 3339 timestamp with its time zone, "
            f"such as 2030-01-31T00:00:00Z, got {str(value)[:80]!r}"
        )
    return when.astimezone(dt.UTC)


def _digest_of(where: str, entry: Mapping[str, Any]) -> bytes:
    token, hashed = entry.get("token"), entry.get("sha256")
    if (token is None) == (hashed is None):
        raise InvalidSetting(f"{where}: give exactly one of 'token' and 'sha256'")
    if token is not None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH or token != token.strip():
            raise InvalidSetting(
                f"{where}: 'token' must be a string of at least {MIN_TOKEN_LENGTH} characters "
                "without surrounding spaces"
            )
        return hash_token(token)
    if not isinstance(hashed, str) or not _SHA256_HEX.match(hashed):
        raise InvalidSetting(f"{where}: 'sha256' must be 64 hexadecimal characters")
    return bytes.fromhex(hashed)
