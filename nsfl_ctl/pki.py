"""What ``nsfl-ctl pki`` does on a PKI directory: init, issue, rotate, revoke, show.

The files and their layout belong to :class:`libs.pki.directory.PkiDirectory`;
this module adds what an operator needs around them, as plain functions the
click commands call (and the standalone control plane and the demo reuse):

* one identity from the command's options (``--control``, ``--client`` or
  ``--coordinator NS/JOB``), in the directory's trust domain;
* issuing into ``issued/<identity>/`` or into a folder of the user's choice
  (``--out``: ``cert.pem``, ``key.pem`` 0600 and a copy of ``ca.pem``);
* rotating in place: the new key and certificate are written beside the old
  ones first and then renamed over them one right after the other, so a
  server reloading on its next handshake never waits on a half-written file
  (connections already open keep their certificate);
* revoking one certificate, or every certificate this directory issued to a
  client.  Rotation replaces ``cert.pem``, so each issued certificate is
  also kept, public part only, as ``issued/<identity>/history/<serial>.pem``:
  revoking a client therefore also revokes the certificates it had before a
  rotation, and anything else under ``issued/`` that holds that client's
  certificate (for example written by the API server on enrolment);
* the facts of a certificate or a directory (identity, issuer, serial,
  validity, revoked or not) for ``show``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from libs.errors import NotFound, ValidationFailed
from libs.pki.authority import (
    DEFAULT_LEAF_DAYS,
    cert_pem,
    identity_of,
    key_pem,
    load_certificates,
    load_key,
    new_key,
    utcnow,
)
from libs.pki.directory import PRIVATE, IssuedFiles, PkiDirectory
from libs.pki.identity import DEFAULT_TRUST_DOMAIN, Identity

HISTORY = "history"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
CONTROL_PLANE = ("selector", "scheduler", "api-server")
# A standalone plane re-issues a control-plane certificate that has less than this left.
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertificateFacts:
    """What ``show`` tells about one certificate."""

    path: Path
    identity: str
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    is_ca: bool
    revoked: bool | None  # None: not known (no PKI directory to ask)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "identity": self.identity, "subject": self.subject, "issuer": self.issuer,
            "serial": self.serial, "notBefore": self.not_before.isoformat(),
            "notAfter": self.not_after.isoformat(), "isCa": self.is_ca, "revoked": self.revoked,
        }  # fmt: skip


# --- identities -----------------------------------------------------------------------------------


def chosen_identity(
    trust_domain: str,
    *,
    control: str | None = None,
    client: str | None = None,
    coordinator: str | None = None,
) -> Identity:
    """The one identity the options name; a clear error for none or several."""
    given = [name for name, value in (("--control", control), ("--client", client),
                                      ("--coordinator", coordinator)) if value]  # fmt: skip
    if len(given) != 1:
        raise ValidationFailed(
            "give exactly one of --control scheduler|selector|api-server, --client ID or --coordinator NS/JOB"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if control:
        return Identity.control(control, trust_domain)
    if client:
        return Identity.client(client, trust_domain)
    return Identity.coordinator_of(str(coordinator), trust_domain)


def open_directory(root: Path) -> PkiDirectory:
    """An existing PKI directory; NotFound saying how to make one otherwise."""
    directory = PkiDirectory(root)
    if not directory.exists():
        raise NotFound(f"no PKI in {root}; create one with `nsfl-ctl pki init --dir {root}`")
    return directory


# --- init, issue, rotate --------------------------------------------------------------------------


def init(
    root: Path,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    *,
    parent_cert: Path | None = None,
    parent_key: Path | None = None,
) -> CertificateFacts:
    """A new CA in ``root`` (an intermediate under the user's CA if given); the issuing CA's facts."""
    Identity.control("api-server", trust_domain)  # the trust domain's own check, before anything is written
    if parent_cert is not None and parent_key is not None:
        _check_parent(parent_cert, parent_key)
    directory = PkiDirectory(root)
    directory.init(trust_domain, parent_cert=parent_cert, parent_key=parent_key)
    return certificate_facts(directory.issuer, directory)


def issue(
    root: Path,
    identity: Identity,
    *,
    hosts: Sequence[str] = (),
    days: float = DEFAULT_LEAF_DAYS,
    out: Path | None = None,
) -> IssuedFiles:
    """A new key (0600) and certificate for ``identity``: under ``issued/`` or in ``out``."""
    directory = open_directory(root)
    _check_domain(directory, identity)
    if hosts and identity.server_name is None:
        raise ValidationFailed(
            "--host names where a server is reached; a client certificate serves nothing and carries no host"
        )
    files = _target(directory, identity, out)
    files.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if out is not None and files.ca != directory.ca:
        _write(files.ca, directory.ca.read_bytes(), 0o644)
    authority = directory.authority()
    key = new_key()
    cert = authority.issue(identity, key.public_key(), hosts=hosts, days=days)
    _replace_pair(files, cert_pem(cert) + authority.chain_pem, key_pem(key))
    _keep_history(directory, identity, cert)
    return files


def rotate(
    root: Path,
    identity: Identity,
    *,
    hosts: Sequence[str] = (),
    days: float = DEFAULT_LEAF_DAYS,
    out: Path | None = None,
) -> IssuedFiles:
    """Re-issue ``identity``'s key and certificate where they are (see the module docstring)."""
    directory = open_directory(root)
    files = _target(directory, identity, out)
    if not files.cert.is_file():
        raise NotFound(
            f"no certificate of {identity.uri} in {files.cert.parent} to rotate; issue one with `nsfl-ctl pki issue`"
        )
    current = _leaf(files.cert)
    if _identity_or_none(current) != identity:
        raise ValidationFailed(f"{files.cert} is not a certificate of {identity.uri}; nothing rotated")
    if not hosts and identity.server_name is not None:
        hosts = _extra_hosts(current, identity)
    return issue(root, identity, hosts=hosts, days=days, out=out)


def ensure_issued(directory: PkiDirectory, identity: Identity, hosts: Sequence[str] = ()) -> IssuedFiles:
    """``identity``'s files under ``issued/``, issued again only when missing, foreign or near expiry."""
    files = directory.issued(identity)
    try:
        cert = load_certificates(files.cert.read_bytes())[0]
        fresh = (
            files.key.is_file()
            and _issued_by(directory, cert)
            and cert.not_valid_after_utc - utcnow() > RENEW_BEFORE
            and identity_of(cert) == identity
            and set(hosts) <= set(_extra_hosts(cert, identity))
        )
    except (OSError, ValidationFailed, IndexError):
        fresh = False
    return files if fresh else issue(directory.root, identity, hosts=hosts)


def ensure_control_plane(root: Path) -> PkiDirectory:
    """A local CA in ``root`` (made if missing) and the control plane's loopback certificates."""
    directory = PkiDirectory(root)
    if not directory.exists():
        directory.init(DEFAULT_TRUST_DOMAIN)
    domain = directory.trust_domain()
    for name in CONTROL_PLANE:
        ensure_issued(directory, Identity.control(name, domain), LOOPBACK_HOSTS)
    return directory


def client_wire_settings(root: Path, client_id: str) -> dict[str, str]:
    """The ``tls_*`` and ``trust_domain`` keys of a task manager config, issued from ``root``."""
    directory = open_directory(root)
    files = ensure_issued(directory, Identity.client(client_id, directory.trust_domain()))
    return {
        "tls_ca": str(files.ca), "tls_cert": str(files.cert), "tls_key": str(files.key),
        "tls_crl": str(directory.crl), "trust_domain": directory.trust_domain(),
    }  # fmt: skip


# --- revoke ---------------------------------------------------------------------------------------


def revoke_certificate(root: Path, cert_file: Path, reason: str = "") -> CertificateFacts:
    directory = open_directory(root)
    cert = _leaf(cert_file)
    if not _issued_by(directory, cert):
        raise ValidationFailed(f"{cert_file} was not issued by this PKI's issuing CA; revoke it where it was")
    directory.revoke(cert, reason)
    return certificate_facts(cert_file, directory)


def revoke_client(root: Path, client_id: str, reason: str = "") -> list[CertificateFacts]:
    """Revoke every certificate of ``client/<client_id>`` found under ``issued/``; NotFound if none."""
    directory = open_directory(root)
    wanted = Identity.client(client_id, directory.trust_domain())
    found: dict[int, Path] = {}  # by serial: cert.pem and its history copy are one certificate
    for path, cert in _issued_certificates(directory):
        if _identity_or_none(cert) == wanted:
            found.setdefault(cert.serial_number, path)
    if not found:
        raise NotFound(
            f"this PKI issued no certificate to client {client_id!r} (nothing under {root}/issued); "
            "certificates from enrolment are known to the API server: `nsfl-ctl pki revoke --client ID` "
            "without --dir revokes them"
        )
    for path in found.values():
        directory.revoke(_leaf(path), reason)
    return [certificate_facts(path, directory) for path in found.values()]


# --- show -----------------------------------------------------------------------------------------


def certificate_facts(cert_file: Path, directory: PkiDirectory | None = None) -> CertificateFacts:
    cert = _leaf(cert_file)
    revoked = None
    if directory is not None and directory.exists():
        serials = {int(e["serial"]) for e in directory.revoked_entries()}
        revoked = cert.serial_number in serials and _issued_by(directory, cert)
    constraints = _extension(cert, x509.BasicConstraints)
    identity = _identity_or_none(cert)
    return CertificateFacts(
        cert_file, identity.uri if identity else "", cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(), format(cert.serial_number, "x"), cert.not_valid_before_utc,
        cert.not_valid_after_utc, bool(constraints and constraints.ca), revoked,
    )  # fmt: skip


def directory_facts(root: Path) -> dict[str, Any]:
    """The CA of a PKI directory and the current certificate of each identity it issued."""
    directory = open_directory(root)
    issued = [
        certificate_facts(path, directory)
        for path, _ in _issued_certificates(directory)
        if path.parent.name != HISTORY
    ]
    return {
        "directory": str(directory.root), "trustDomain": directory.trust_domain(),
        "root": certificate_facts(directory.ca).as_dict(), "issuer": certificate_facts(directory.issuer).as_dict(),
        "issued": [f.as_dict() for f in issued], "revoked": directory.revoked_entries(),
    }  # fmt: skip


# --- plumbing -------------------------------------------------------------------------------------


def _check_parent(cert_file: Path, key_file: Path) -> None:
    """The user's CA: a CA certificate and the key that goes with it (clear errors, not a traceback)."""
    cert = _leaf(cert_file)
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise ValidationFailed(f"--parent-cert {cert_file} is not a CA certificate")
    try:
        key = load_key(key_file.read_bytes())
    except FileNotFoundError:
        raise NotFound(f"--parent-key: no file {key_file}") from None
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(
            f"--parent-key {key_file} is not an unencrypted PEM private key: {exc}".splitlines()[0]
        ) from None
    if key.public_key() != cert.public_key():
        raise ValidationFailed(f"--parent-key {key_file} is not the key of --parent-cert {cert_file}")


def _issued_by(directory: PkiDirectory, cert: x509.Certificate) -> bool:
    """Whether this directory's issuing CA signed ``cert`` (two nsfl CAs may carry the same name)."""
    try:
        cert.verify_directly_issued_by(directory.authority().cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _check_domain(directory: PkiDirectory, identity: Identity) -> None:
    if identity.trust_domain != directory.trust_domain():
        raise ValidationFailed(
            f"{identity.uri} is not in this PKI's trust domain {directory.trust_domain()!r}"
        )


def _target(directory: PkiDirectory, identity: Identity, out: Path | None) -> IssuedFiles:
    if out is None:
        return directory.issued(identity)
    if out.exists() and not out.is_dir():
        raise ValidationFailed(f"--out {out} is a file; give a folder")
    return IssuedFiles(out / "ca.pem", out / "cert.pem", out / "key.pem")


def _replace_pair(files: IssuedFiles, cert: bytes, key: bytes) -> None:
    """Write both files beside their targets, then rename both: the pair changes in two quick steps."""
    staged = [(_stage(files.key, key, PRIVATE), files.key), (_stage(files.cert, cert, 0o644), files.cert)]
    try:
        for temporary, target in staged:
            os.replace(temporary, target)
    finally:
        for temporary, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


def _stage(target: Path, data: bytes, mode: int) -> Path:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.new")
    _write(temporary, data, mode)
    return temporary


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)  # the umask may have narrowed it, and an existing file keeps its old mode


def _keep_history(directory: PkiDirectory, identity: Identity, cert: x509.Certificate) -> None:
    folder = directory.root / "issued" / identity.file_stem / HISTORY
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / f"{cert.serial_number:x}.pem", cert_pem(cert), 0o644)


def _issued_certificates(directory: PkiDirectory) -> list[tuple[Path, x509.Certificate]]:
    """Every certificate file under ``issued/`` (keys and unreadable files skipped)."""
    found = []
    for path in sorted((directory.root / "issued").rglob("*.pem")):
        if path.name.startswith(".") or path.name in ("key.pem", "ca.pem"):
            continue
        with contextlib.suppress(OSError, ValidationFailed, IndexError):
            found.append((path, load_certificates(path.read_bytes())[0]))
    return found


def _leaf(cert_file: Path) -> x509.Certificate:
    try:
        data = cert_file.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no certificate file {cert_file}") from None
    try:
        return load_certificates(data)[0]
    except (ValidationFailed, IndexError):
        raise ValidationFailed(f"{cert_file} holds no PEM certificate") from None


def _identity_or_none(cert: x509.Certificate) -> Identity | None:
    try:
        return identity_of(cert)
    except ValidationFailed:
        return None


def _extension(cert: x509.Certificate, kind: type[x509.BasicConstraints]) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _extra_hosts(cert: x509.Certificate, identity: Identity) -> list[str]:
    """The DNS names and addresses a server certificate carries besides its identity's server name."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [n for n in sans.get_values_for_type(x509.DNSName) if n != identity.server_name]
    return names + [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
