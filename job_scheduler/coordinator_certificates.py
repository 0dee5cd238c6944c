"""Each coordinator's short-lived certificate, signed by the scheduler at launch.

A coordinator is the server of one job: clients download its model and
upload to it, and task managers dial an offer's endpoint only if the server
there proves it is *that job's* coordinator (DESIGN §9).  So every launch
gets a fresh key and a certificate for ``spiffe://<domain>/coordinator/<ns>/<job>``
(with the server name derived from it and the hosts it is reached at),
signed by the issuing CA the scheduler is configured with
(``coordinator_issuer_cert``/``coordinator_issuer_key``).

Why short-lived: a coordinator's certificate is worth something only while
its job runs, and nothing revokes it when the job ends.  It lasts the job's
longest possible life, ``rounds × roundTimeoutSeconds`` (every round closes
at its deadline at the latest), plus a day's margin, and never more than
:data:`MAX_LIFETIME`; a relaunch (a crash, a restart) gets a new one.

How it reaches the coordinator is the platform's business (a 0600 file in the
job's work directory locally, a Secret on Kubernetes); what the coordinator
is told is the same everywhere: :func:`coordinator_environment`, its
``NSFL_COORDINATOR_TLS_*`` settings.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from job_scheduler.platform import LaunchRequest
from libs.errors import InvalidSetting, ValidationFailed
from libs.files import write_atomic
from libs.jobspec import JobSpec
from libs.pki.authority import (
    SigningAuthority,
    cert_pem,
    key_pem,
    load_certificates,
    load_key,
    new_key,
    utcnow,
)
from libs.pki.identity import Identity

log = logging.getLogger(__name__)

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
PRIVATE = 0o600
MARGIN = dt.timedelta(days=1)
MAX_LIFETIME = dt.timedelta(days=30)

PREFIX = "NSFL_COORDINATOR_"
WIRE_VARIABLES = tuple(
    PREFIX + name for name in ("TLS_CA", "TLS_CERT", "TLS_KEY", "TLS_CRL", "TRUST_DOMAIN", "INSECURE")
)


def certificate_lifetime(spec: JobSpec) -> dt.timedelta:
    """How long a coordinator's certificate lasts: the job's longest life plus a margin, capped."""
    longest = dt.timedelta(seconds=spec.rounds * spec.round_timeout_seconds)
    return min(longest + MARGIN, MAX_LIFETIME)


def server_hosts(hosts: Iterable[str]) -> list[str]:
    """The hosts worth naming in a certificate: non-empty, not a wildcard address, each once."""
    out: list[str] = []
    for host in hosts:
        host = host.strip().strip("[]")
        if not host or host in out:
            continue
        try:
            if ipaddress.ip_address(host).is_unspecified:  # 0.0.0.0 and :: are where one listens, not a name
                continue
        except ValueError:
            pass
        out.append(host)
    return out


def coordinator_environment(
    *, ca: str, cert: str, key: str, crl: str | None, trust_domain: str
) -> dict[str, str]:
    """The coordinator's wire settings as ``NSFL_COORDINATOR_*`` variables (paths as it sees them)."""
    env = {
        PREFIX + "TLS_CA": ca,
        PREFIX + "TLS_CERT": cert,
        PREFIX + "TLS_KEY": key,
        PREFIX + "TRUST_DOMAIN": trust_domain,
    }
    if crl:
        env[PREFIX + "TLS_CRL"] = crl
    return env


def insecure_environment() -> dict[str, str]:
    """What a coordinator of an insecure scheduler (loopback tests) is told: plaintext, no certificate."""
    return {PREFIX + "INSECURE": "true"}


@dataclass(frozen=True)
class CoordinatorCertificate:
    """One launch's key and certificate (leaf, then the chain above it but the root), as PEM."""

    identity: Identity
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    not_after: dt.datetime


@dataclass(frozen=True)
class CoordinatorIssuer:
    """The scheduler's issuing CA for coordinators, and the trust files coordinators are given."""

    authority: SigningAuthority
    trust_domain: str
    ca: Path  # the trust bundle every process verifies peers with (the scheduler's own tls_ca)
    crl: Path | None = None  # the scheduler's revocation list, if any
    clock: Callable[[], dt.datetime] = utcnow

    @classmethod
    def load(
        cls, cert: Path, key: Path, *, trust_domain: str, ca: Path, crl: Path | None = None
    ) -> CoordinatorIssuer:
        """Read the issuing CA; a setting error naming the file if it cannot sign coordinators."""
        try:
            chain = load_certificates(cert.read_bytes())
            private = load_key(key.read_bytes())
        except OSError as exc:
            raise InvalidSetting(
                f"settings 'coordinator_issuer_cert'/'coordinator_issuer_key': cannot read "
                f"{exc.filename}: {exc.strerror}"
            ) from None
        except ValidationFailed as exc:
            raise InvalidSetting(f"settings 'coordinator_issuer_*': {exc.message}") from None
        if not chain:
            raise InvalidSetting(f"setting 'coordinator_issuer_cert' ({cert}) holds no certificate")
        _check_can_issue(chain[0], private.public_key(), cert, key)
        return cls(SigningAuthority(chain[0], private, tuple(chain[1:])), trust_domain, ca, crl)

    def identity(self, namespace: str, name: str) -> Identity:
        return Identity.coordinator(namespace, name, self.trust_domain)

    def issue(
        self, namespace: str, name: str, spec: JobSpec, *, hosts: Iterable[str] = ()
    ) -> CoordinatorCertificate:
        """A new key and certificate for the coordinator of ``namespace/name``, for the job's lifetime."""
        identity = self.identity(namespace, name)
        now = self.clock()
        key = new_key()
        cert = self.authority.issue(
            identity,
            key.public_key(),
            not_after=now + certificate_lifetime(spec),
            hosts=server_hosts(hosts),
            now=now,
        )
        log.info(
            "issued the certificate of %s (serial %x) until %s",
            identity.uri,
            cert.serial_number,
            cert.not_valid_after_utc.isoformat(),
        )
        return CoordinatorCertificate(
            identity, cert_pem(cert) + self.authority.chain_pem, key_pem(key), cert.not_valid_after_utc
        )

    def ca_pem(self) -> bytes:
        """The trust bundle as it is now (read at each launch, so a replaced bundle is passed on)."""
        try:
            return self.ca.read_bytes()
        except OSError as exc:
            raise InvalidSetting(f"setting 'tls_ca': cannot read {self.ca}: {exc.strerror}") from None


def _check_can_issue(cert: x509.Certificate, public_key: Any, cert_path: Path, key_path: Path) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise InvalidSetting(
            f"setting 'coordinator_issuer_cert' ({cert_path}) is not a CA certificate; "
            "give the PKI directory's issuer.pem"
        )
    mine = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    theirs = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if mine != theirs:
        raise InvalidSetting(
            f"setting 'coordinator_issuer_key' ({key_path}) is not the key of 'coordinator_issuer_cert' "
            f"({cert_path})"
        )


def write_certificate(
    issuer: CoordinatorIssuer, request: LaunchRequest, folder: Path, hosts: Iterable[str]
) -> dict[str, str]:
    """Issue launch ``request``'s certificate into ``folder`` (0700; both files 0600); its variables."""
    issued = issuer.issue(request.namespace, request.name, request.spec, hosts=hosts)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # the umask may have narrowed it, or an older folder be wider
    write_atomic(folder / KEY_FILE, issued.key_pem, mode=PRIVATE)
    write_atomic(folder / CERT_FILE, issued.cert_pem, mode=PRIVATE)
    return coordinator_environment(
        ca=str(issuer.ca),
        cert=str(folder / CERT_FILE),
        key=str(folder / KEY_FILE),
        crl=str(issuer.crl) if issuer.crl is not None else None,
        trust_domain=issuer.trust_domain,
    )
