"""The one place that sets up nsfl's gRPC wire: mutual TLS, identities, authorisation.

Every component builds its servers and channels through :class:`Wire`
(:mod:`libs.wire.endpoints`), made from its settings' ``tls_*`` fields
(:class:`WireSettings`).  With TLS (the default path) a server asks every
peer for a certificate from the configured CA, reloads its own certificate
from disk on each new handshake (rotation without restart), and runs each
call through the authorisation table (:mod:`libs.wire.authorization`),
enforced by :mod:`libs.wire.guard`.  A channel dials a server by the name
its identity implies, so TLS itself checks who answers.  Plaintext exists
only behind an explicit ``insecure: true`` on a loopback address.
"""

from libs.wire.endpoints import Wire
from libs.wire.guard import current_caller, require_caller_is_client
from libs.wire.settings import WireSettings
from libs.wire.tls import TlsFiles

__all__ = ["TlsFiles", "Wire", "WireSettings", "current_caller", "require_caller_is_client"]
