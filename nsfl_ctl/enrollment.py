"""Enrolment and revocation through the API server: what a data owner and an admin run.

A data owner's host gets its first certificate without anyone copying a key
around (``nsfl-ctl pki enroll``): it makes its own key, which never leaves
the host, and a certificate request, and redeems a one-time token an admin
created for it (``nsfl-ctl pki enrollment-token``).  The API server signs
the request for exactly the client id the token names, whatever the request
asks for; the reply is checked here before anything is written (the
certificate is for this key, names a client, chains to the CA the reply
carries), then ``cert.pem``, ``key.pem`` (0600) and ``ca.pem`` are written
to the chosen folder.

The token is the only credential of ``enroll``, so no bearer token is sent.
Over plain HTTP to another host the token can be read on the way (and
redeemed first by whoever read it): :func:`enroll` warns then, and
``--ca-file`` verifies an HTTPS API signed by a private CA.

The endpoints (see the API server's ``/openapi.json``)::

    POST /api/v1/enroll                       {token, csr}  -> {certificate, ca, clientId, identity}
    POST /api/v1/enrollment-tokens   (admin)  {clientId, ttlSeconds} -> {token, clientId, expiresAt}
    POST /api/v1/clients/{clientId}/revoke    (admin)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from libs.errors import InvalidSetting, InvalidState, NsflError, ValidationFailed
from libs.files import write_atomic
from libs.pki.authority import PrivateKey, cert_pem, identity_of, key_pem, load_certificates, new_key
from libs.pki.directory import PRIVATE, IssuedFiles
from libs.pki.identity import Identity, IdentityKind
from nsfl_ctl.client import ApiClient, is_loopback_host, path_of

ENROLL_PATH = "/api/v1/enroll"
TOKENS_PATH = "/api/v1/enrollment-tokens"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Enrolled:
    identity: Identity
    files: IssuedFiles
    not_after: str

    def config_keys(self) -> dict[str, str]:
        """What goes into the task manager's config file."""
        return {
            "client_id": str(self.identity.client_id), "tls_ca": str(self.files.ca),
            "tls_cert": str(self.files.cert), "tls_key": str(self.files.key),
            "trust_domain": self.identity.trust_domain,
        }  # fmt: skip


def revoke_path(client_id: str) -> str:
    return path_of("api", "v1", "clients", client_id, "revoke")


def parse_serial(text: str) -> int:
    """A certificate serial: decimal as the API reports it, or hex written ``0x...``."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise ValidationFailed(f"serial {text[:80]!r} must be a decimal number or 0x-prefixed hex") from None
    if value <= 0:
        raise ValidationFailed(f"serial {text[:80]!r} must be positive")
    return value


def revoke_elsewhere(error: InvalidState, client_id: str) -> InvalidState:
    """The API could not write the CRL (a read-only PKI): the same error, with the command that can."""
    serials = error.details.get("serials")
    if not isinstance(serials, list) or not serials:
        return error
    flags = " ".join(f"--serial {serial}" for serial in serials)
    return InvalidState(
        f"{error.message}. Where the PKI is kept: nsfl-ctl pki revoke --dir <PKI> --client {client_id} {flags}",
        details=error.details,
    )


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``24h`` or ``7d``."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValidationFailed(f"duration {text!r} must be a positive number with s, m, h or d (e.g. 24h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def certificate_request(key: PrivateKey) -> bytes:
    """A PEM CSR for ``key``; its names are ignored by the API server, which signs the token's identity."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nsfl enrolment request")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(Encoding.PEM)


def enroll(
    api_url: str,
    token: str,
    out: Path,
    *,
    ca_file: Path | None = None,
    timeout: float = 30.0,
    warn: Callable[[str], None] = lambda line: None,
) -> Enrolled:
    """Make a key and a CSR, redeem ``token`` at ``api_url``, check the reply, write the files to ``out``."""
    parts = urlsplit(api_url)
    if ca_file is not None and parts.scheme != "https":
        raise InvalidSetting(f"--ca-file verifies an https:// API, but the API is {api_url}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        warn(
            f"warning: {api_url} is plain HTTP: the enrolment token crosses the network unencrypted; "
            "prefer the API's https:// address"
        )
    if out.exists() and not out.is_dir():
        raise ValidationFailed(f"--out {out} is a file; give a folder")
    key = new_key()
    client = ApiClient(api_url, "", timeout=timeout, ca_file=ca_file)
    reply = client.post(ENROLL_PATH, {"token": token.strip(), "csr": certificate_request(key).decode()})
    chain, bundle, identity = _checked_reply(reply, key)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = IssuedFiles(out / "ca.pem", out / "cert.pem", out / "key.pem")
    write_atomic(files.key, key_pem(key), mode=PRIVATE)
    write_atomic(files.cert, b"".join(cert_pem(c) for c in chain))
    write_atomic(files.ca, b"".join(cert_pem(c) for c in bundle))
    return Enrolled(identity, files, chain[0].not_valid_after_utc.isoformat())


def _checked_reply(
    reply: Any, key: PrivateKey
) -> tuple[list[x509.Certificate], list[x509.Certificate], Identity]:
    """The certificate chain, the trust bundle and the identity of an enrolment reply, each checked."""
    if not isinstance(reply, dict) or not all(isinstance(reply.get(k), str) for k in ("certificate", "ca")):
        raise ValidationFailed(
            "the API's enrolment reply has no certificate and CA; is it an nsfl API server?"
        )
    try:
        chain = load_certificates(reply["certificate"].encode())
        bundle = load_certificates(reply["ca"].encode())
    except NsflError as exc:
        raise ValidationFailed(f"the API's enrolment reply is not PEM: {exc.message}") from None
    leaf = chain[0]
    if leaf.public_key() != key.public_key():
        raise ValidationFailed("the API signed a certificate for another key than this request's")
    identity = identity_of(leaf)
    if identity.kind is not IdentityKind.CLIENT:
        raise ValidationFailed(f"the API issued {identity.uri}, which is not a client identity")
    named = reply.get("clientId")
    if named is not None and named != identity.client_id:
        raise ValidationFailed(
            f"the API said client {named!r} but the certificate is for {identity.client_id!r}"
        )
    _check_chain(chain, bundle)
    return chain, bundle, identity


def _check_chain(chain: list[x509.Certificate], bundle: list[x509.Certificate]) -> None:
    """Each certificate is signed by the next, and the last by a CA of the bundle."""
    candidates = [*chain[1:], *bundle]
    current = chain[0]
    for _ in range(len(candidates) + 1):
        if any(current == root for root in bundle):
            return
        issuer = next((c for c in candidates if c.subject == current.issuer and c != current), None)
        if issuer is None:
            break
        try:
            current.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise ValidationFailed(f"the API's certificate does not verify: {type(exc).__name__}") from None
        current = issuer
        if current in bundle:
            return
    raise ValidationFailed("the API's certificate does not chain to the CA it sent")
