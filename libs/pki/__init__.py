"""nsfl's public-key infrastructure: identities, a certificate authority, revocation, enrolment.

Every process of nsfl proves what it is with an X.509 certificate whose one
URI subject alternative name is a SPIFFE-style identity
(:mod:`libs.pki.identity`).  Authorisation reads only that identity, never a
payload field.  Servers also carry a DNS name derived from their identity
(:meth:`Identity.server_name`), which a caller dials as the TLS server name:
so "the server there is the coordinator of job X, signed by our CA" is what
TLS itself verifies, and a front door can route on it (SNI) without
terminating TLS.

Modules: ``identity`` (names, pure), ``authority`` (keys, CAs, issuing,
signing CSRs), ``revocation`` (CRLs and a reloading revocation check),
``enrollment`` (one-time tokens, hashed, expiring), ``directory`` (the files
of a PKI on disk, written 0600).
"""

from libs.pki.identity import CONTROL_NAMES, DEFAULT_TRUST_DOMAIN, Identity, IdentityKind

__all__ = ["CONTROL_NAMES", "DEFAULT_TRUST_DOMAIN", "Identity", "IdentityKind"]
