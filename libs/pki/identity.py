"""Identities of nsfl processes, SPIFFE-style, and the server names derived from them.

``spiffe://<trust-domain>/client/<client-id>``
    a task manager (and the executors it launches) of one data owner;
``spiffe://<trust-domain>/coordinator/<namespace>/<job>``
    the coordinator of one job;
``spiffe://<trust-domain>/control/<scheduler|selector|api-server>``
    a control-plane service.

Servers are dialled by a DNS name derived from the identity
(:meth:`Identity.server_name`, e.g. ``digits.team-a.coordinator.nsfl.local``):
the certificate carries it, so TLS hostname verification checks the peer's
role and job, whoever resolves the address.  Clients get no server name: a
client certificate can never pass as a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from libs.errors import ValidationFailed

DEFAULT_TRUST_DOMAIN = "nsfl.local"
CONTROL_NAMES = frozenset({"scheduler", "selector", "api-server"})

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")


class IdentityKind(StrEnum):
    CLIENT = "client"
    COORDINATOR = "coordinator"
    CONTROL = "control"


@dataclass(frozen=True, order=True)
class Identity:
    """One process's identity; build with :meth:`client`, :meth:`coordinator`, :meth:`control` or :meth:`parse`."""

    trust_domain: str
    kind: IdentityKind
    path: tuple[str, ...]

    # --- constructors ---------------------------------------------------------------------------

    @classmethod
    def client(cls, client_id: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Identity:
        if not _CLIENT_ID.fullmatch(client_id):
            raise ValidationFailed(
                f"client id {client_id[:80]!r} must be 1-63 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit"
            )
        return cls(_domain(trust_domain), IdentityKind.CLIENT, (client_id,))

    @classmethod
    def coordinator(cls, namespace: str, job: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Identity:
        for what, value in (("namespace", namespace), ("job name", job)):
            if not _LABEL.fullmatch(value):
                raise ValidationFailed(f"{what} {value[:80]!r} must be a DNS-1123 label")
        return cls(_domain(trust_domain), IdentityKind.COORDINATOR, (namespace, job))

    @classmethod
    def coordinator_of(cls, job_id: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Identity:
        """The coordinator of ``job_id`` (``<namespace>/<name>``)."""
        namespace, sep, name = job_id.partition("/")
        if not sep:
            raise ValidationFailed(f'job id {job_id[:140]!r} must be "<namespace>/<name>"')
        return cls.coordinator(namespace, name, trust_domain)

    @classmethod
    def control(cls, name: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Identity:
        if name not in CONTROL_NAMES:
            raise ValidationFailed(
                f"control-plane identity {name[:80]!r} is not one of {', '.join(sorted(CONTROL_NAMES))}"
            )
        return cls(_domain(trust_domain), IdentityKind.CONTROL, (name,))

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """An identity from its ``spiffe://`` URI; a clear error for anything else."""
        prefix = "spiffe://"
        if not uri.startswith(prefix):
            raise ValidationFailed(f"identity {uri[:200]!r} is not a spiffe:// URI")
        domain, _, rest = uri[len(prefix) :].partition("/")
        parts = rest.split("/") if rest else []
        kind = parts[0] if parts else ""
        if kind == IdentityKind.CLIENT and len(parts) == 2:
            return cls.client(parts[1], domain)
        if kind == IdentityKind.COORDINATOR and len(parts) == 3:
            return cls.coordinator(parts[1], parts[2], domain)
        if kind == IdentityKind.CONTROL and len(parts) == 2:
            return cls.control(parts[1], domain)
        raise ValidationFailed(
            f"identity {uri[:200]!r} names no nsfl role: expected spiffe://<domain>/client/<id>, "
            "/coordinator/<namespace>/<job> or /control/<scheduler|selector|api-server>"
        )

    # --- what it names --------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/{self.kind.value}/{'/'.join(self.path)}"

    @property
    def client_id(self) -> str | None:
        return self.path[0] if self.kind is IdentityKind.CLIENT else None

    @property
    def job_id(self) -> str | None:
        """``<namespace>/<name>`` of a coordinator's job, else None."""
        return "/".join(self.path) if self.kind is IdentityKind.COORDINATOR else None

    @property
    def control_name(self) -> str | None:
        return self.path[0] if self.kind is IdentityKind.CONTROL else None

    @property
    def server_name(self) -> str | None:
        """The DNS name a server with this identity is dialled by (None for clients, which serve nothing)."""
        if self.kind is IdentityKind.COORDINATOR:
            namespace, job = self.path
            return f"{job}.{namespace}.coordinator.{self.trust_domain}"
        if self.kind is IdentityKind.CONTROL:
            return f"{self.path[0]}.control.{self.trust_domain}"
        return None

    @property
    def file_stem(self) -> str:
        """A file-system-safe name, e.g. ``client-hospital-a``, ``coordinator-team-a-digits``."""
        return "-".join((self.kind.value, *self.path))

    def __str__(self) -> str:
        return self.uri


def _domain(trust_domain: str) -> str:
    if not _DOMAIN.fullmatch(trust_domain) or len(trust_domain) > 200:
        raise ValidationFailed(
            f"trust domain {trust_domain[:80]!r} must be a lower-case DNS name such as {DEFAULT_TRUST_DOMAIN!r}"
        )
    return trust_domain
