"""Keys, certificate authorities, and the certificates they issue.

A :class:`SigningAuthority` is a CA certificate with its key (a root made by
:func:`create_root`, or an intermediate made by :func:`create_intermediate`
under a CA the user brings).  It issues leaf certificates for an
:class:`~libs.pki.identity.Identity` (:meth:`SigningAuthority.issue`) and
signs certificate requests (:meth:`SigningAuthority.sign_request`).

Why a request's own names are ignored: a client redeeming an enrolment token
may put anything in its CSR; the certificate carries exactly the identity the
token allows (and, for servers, the server name derived from it), so nothing
in a request can widen what the holder is.  Keys are EC P-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from libs.errors import ValidationFailed
from libs.pki.identity import Identity

PrivateKey = ec.EllipticCurvePrivateKey

DEFAULT_LEAF_DAYS = 365
DEFAULT_CA_DAYS = 3650
# Issued certificates start a little in the past, so a peer whose clock is slightly behind accepts them.
BACKDATE = dt.timedelta(minutes=5)


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValidationFailed("the private key must be an EC key (nsfl issues P-256 keys)")
    return key


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValidationFailed(f"not a PEM certificate: {exc}") from None
    return certs


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def identity_of(cert: x509.Certificate) -> Identity:
    """The one nsfl identity in ``cert``'s URI SANs; a clear error if there is none or several."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValidationFailed(
            "the certificate has no subject alternative names, so no nsfl identity"
        ) from None
    uris = [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    if len(uris) != 1:
        raise ValidationFailed(
            f"the certificate must carry exactly one spiffe:// URI, it carries {len(uris)}"
        )
    return Identity.parse(uris[0])


@dataclass(frozen=True)
class SigningAuthority:
    """A CA that issues: its certificate, its key, and the chain above it (empty for a root)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def chain_pem(self) -> bytes:
        """What a leaf it issued presents after itself: this CA, then the CAs above it but the root."""
        above = [c for c in self.chain if c.subject != c.issuer]
        if self.cert.subject == self.cert.issuer:
            return b""
        return b"".join(cert_pem(c) for c in (self.cert, *above))

    def issue(
        self,
        identity: Identity,
        public_key: ec.EllipticCurvePublicKey,
        *,
        days: float = DEFAULT_LEAF_DAYS,
        not_after: dt.datetime | None = None,
        hosts: Sequence[str] = (),
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A leaf certificate for ``identity``; ``hosts`` adds DNS names or IP addresses a server is also reached by."""
        now = now or utcnow()
        end = not_after or now + dt.timedelta(days=days)
        end = min(end, self.cert.not_valid_after_utc)
        if end <= now:
            raise ValidationFailed(
                "the certificate would expire before it starts; check the validity or the CA's"
            )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        if identity.server_name is not None:
            names.append(x509.DNSName(identity.server_name))
            for host in hosts:
                names.append(_host_name(host))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(identity))]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )  # fmt: skip
        return builder.sign(self.key, hashes.SHA256())

    def sign_request(
        self,
        csr_pem: bytes,
        identity: Identity,
        *,
        days: float = DEFAULT_LEAF_DAYS,
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Sign a PEM CSR for ``identity``: its signature is checked, its key used, its names ignored."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ValidationFailed(f"the certificate request is not a PEM CSR: {exc}") from None
        if not csr.is_signature_valid:
            raise ValidationFailed("the certificate request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise ValidationFailed("the certificate request must hold an EC P-256 public key")
        return self.issue(identity, public_key, days=days, now=now)


def create_root(
    trust_domain: str, *, days: float = DEFAULT_CA_DAYS, now: dt.datetime | None = None
) -> SigningAuthority:
    """A new self-signed root CA for ``trust_domain``."""
    key = new_key()
    now = now or utcnow()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsfl"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"nsfl root CA {trust_domain}"),
    ])  # fmt: skip
    cert = (
        _ca_builder(name, name, key.public_key(), key.public_key(), now - BACKDATE, now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return SigningAuthority(cert, key)


def create_intermediate(
    parent: SigningAuthority,
    trust_domain: str,
    *,
    days: float = DEFAULT_CA_DAYS,
    now: dt.datetime | None = None,
) -> SigningAuthority:
    """A new intermediate CA signed by ``parent`` (for example a CA the organisation already runs)."""
    key = new_key()
    now = now or utcnow()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsfl"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"nsfl intermediate CA {trust_domain}"),
    ])  # fmt: skip
    end = min(now + dt.timedelta(days=days), parent.cert.not_valid_after_utc)
    cert = _ca_builder(
        name,
        parent.cert.subject,
        key.public_key(),
        parent.key.public_key(),
        now - BACKDATE,
        end,
        path_length=0,
    ).sign(parent.key, hashes.SHA256())
    return SigningAuthority(cert, key, (parent.cert, *parent.chain))


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePublicKey,
    start: dt.datetime,
    end: dt.datetime,
    path_length: int | None = None,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False)
    )  # fmt: skip


def _common_name(identity: Identity) -> str:
    # The common name is for people reading a certificate; authorisation never looks at it.
    text = identity.file_stem
    return text if len(text) <= 64 else text[:64]


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
