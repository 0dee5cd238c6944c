"""TLS material from files, read again when the files change.

:class:`ServerCertificates` feeds grpc's dynamic server credentials: grpc
asks it on every new handshake, and it answers with a new configuration only
when a file's modification time or size changed, so ``nsfl-ctl pki rotate``
(or cert-manager renewing a Secret) takes effect for new connections while
connections already open keep going.  Channels read the files when they are
opened (:func:`channel_credentials`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from libs.errors import InvalidSetting, ValidationFailed
from libs.pki.authority import identity_of, load_certificates
from libs.pki.identity import Identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for mutual TLS: ``cert``/``key`` identify this side, ``ca`` verifies peers, ``crl`` revokes."""

    ca: Path
    cert: Path
    key: Path
    crl: Path | None = None

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert chain, key) bytes; a setting error naming the file that cannot be read."""
        out = []
        for name, path in (("tls_ca", self.ca), ("tls_cert", self.cert), ("tls_key", self.key)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise InvalidSetting(f"setting {name!r}: cannot read {path}: {exc.strerror}") from None
        return out[0], out[1], out[2]

    def identity(self) -> Identity:
        """The identity this side's certificate carries."""
        _, chain, _ = self.read()
        try:
            return identity_of(load_certificates(chain)[0])
        except ValidationFailed as exc:
            raise InvalidSetting(f"setting 'tls_cert' ({self.cert}): {exc.message}") from None

    def trusted(self) -> list[x509.Certificate]:
        """The CAs that may sign a revocation list: the trust bundle and the chain above this side's leaf."""
        ca, chain, _ = self.read()
        return [*load_certificates(ca), *load_certificates(chain)[1:]]

    def marks(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in (self.ca, self.cert, self.key):
            try:
                stat = os.stat(path)
                out.append((stat.st_mtime_ns, stat.st_size))
            except OSError:
                out.append((0, 0))
        return tuple(out)


class ServerCertificates:
    """A server's certificate configuration, re-read when its files change."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._marks = files.marks()
        self.reloads = 0

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._configuration()

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc on each handshake: a new configuration if the files changed, else None."""
        with self._lock:
            marks = self._files.marks()
            if marks == self._marks:
                return None
            try:
                configuration = self._configuration()
            except Exception as exc:  # a half-written rotation: keep serving the old certificate
                log.warning("TLS files changed but cannot be loaded yet, keeping the old ones: %s", exc)
                return None
            self._marks = marks
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self._files.cert)
            return configuration

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        ca, chain, key = self._files.read()
        check_pair(chain, key, self._files)
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial(), self.fetch, require_client_authentication=True
        )


def check_pair(chain: bytes, key: bytes, files: TlsFiles) -> None:
    """The key must be the certificate's: a rotation caught between its two renames is not served."""
    try:
        public = serialization.load_pem_private_key(key, password=None).public_key()
        leaf = load_certificates(chain)[0]
    except (ValueError, TypeError, ValidationFailed) as exc:
        raise InvalidSetting(f"settings 'tls_cert'/'tls_key' ({files.cert}, {files.key}): {exc}") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        raise InvalidSetting(f"the key {files.key} is not the key of the certificate {files.cert}")


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    ca, chain, key = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
