"""What ``nsfl-ctl pki`` does on a PKI directory: init, issue, rotate, revoke.

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
  certificate; certificates known by serial only (the API server's
  enrolment records) are revoked by serial.

Reading certificates (``show`` and the shared checks) is ``nsfl_ctl.certificates``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

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
from nsfl_ctl.certificates import (
    HISTORY,
    CertificateFacts,
    certificate_facts,
    extension,
    identity_or_none,
    issued_by,
    issued_certificates,
    leaf,
    open_directory,
)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
CONTROL_PLANE = ("selector", "scheduler", "api-server")
# A standalone plane re-issues a control-plane certificate that has less than this left.
RENEW_BEFORE = dt.timedelta(days=30)


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
    current = leaf(files.cert)
    if identity_or_none(current) != identity:
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
            and issued_by(directory, cert)
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
    cert = leaf(cert_file)
    if not issued_by(directory, cert):
        raise ValidationFailed(f"{cert_file} was not issued by this PKI's issuing CA; revoke it where it was")
    directory.revoke(cert, reason)
    return certificate_facts(cert_file, directory)


def revoke_client(
    root: Path, client_id: str, reason: str = "", serials: Sequence[int] = ()
) -> list[CertificateFacts]:
    """Revoke every certificate of ``client/<client_id>`` found under ``issued/``, and ``serials``.

    ``serials`` are certificates this PKI signed that it keeps no file of: the
    API server's enrolment records them, and names them when it cannot write
    the CRL itself (a read-only Secret).  NotFound when there is nothing to revoke.
    """
    directory = open_directory(root)
    wanted = Identity.client(client_id, directory.trust_domain())
    for serial in serials:
        directory.revoke_serial(serial, wanted, reason)
    found: dict[int, Path] = {}  # by serial: cert.pem and its history copy are one certificate
    for path, cert in issued_certificates(directory):
        if identity_or_none(cert) == wanted:
            found.setdefault(cert.serial_number, path)
    if serials and not found:
        return []
    if not found:
        raise NotFound(
            f"this PKI issued no certificate to client {client_id!r} (nothing under {root}/issued); "
            "certificates from enrolment are known to the API server: `nsfl-ctl pki revoke --client ID` "
            "without --dir revokes them"
        )
    for path in found.values():
        directory.revoke(leaf(path), reason)
    return [certificate_facts(path, directory) for path in found.values()]


# --- plumbing -------------------------------------------------------------------------------------


def _check_parent(cert_file: Path, key_file: Path) -> None:
    """The user's CA: a CA certificate and the key that goes with it (clear errors, not a traceback)."""
    cert = leaf(cert_file)
    constraints = extension(cert, x509.BasicConstraints)
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


def _extra_hosts(cert: x509.Certificate, identity: Identity) -> list[str]:
    """The DNS names and addresses a server certificate carries besides its identity's server name."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [n for n in sans.get_values_for_type(x509.DNSName) if n != identity.server_name]
    return names + [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
