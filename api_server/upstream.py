"""How a failed call to another component shows to a REST caller.

``libs.rpc.call_errors`` rebuilds the peer's :class:`~libs.errors.NsflError`,
which is right for errors the peer *meant* (``NotFound``, ``InvalidState``,
``VersionConflict``): their messages are written for users and pass through.
Transport failures are different: gRPC's own text for ``UNAVAILABLE`` or an
unexpected ``INTERNAL`` carries peer addresses and library detail that
DESIGN §6/§9 keep out of responses.  So :func:`upstream_errors` replaces
those messages with one naming only the dependency ("the job scheduler is
unavailable"), logs the original, and keeps the error class, so the REST
status (503 with ``Retry-After``, 504, 500) is still the catalogue's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from libs.errors import CATALOGUE, DeadlineExceeded, NsflError, Unavailable
from libs.rpc import call_errors

log = logging.getLogger(__name__)


@contextlib.contextmanager
def upstream_errors(dependency: str) -> Iterator[None]:
    """Translate a failed gRPC call to ``dependency`` ("the job scheduler") into a safe NsflError."""
    try:
        with call_errors():
            yield
    except Unavailable as exc:
        log.warning("%s is unavailable: %s", dependency, exc.message)
        raise Unavailable(
            f"{dependency} is unavailable; retry later", details={"dependency": dependency}
        ) from None
    except DeadlineExceeded as exc:
        log.warning("%s did not answer in time: %s", dependency, exc.message)
        raise DeadlineExceeded(f"{dependency} did not answer in time; retry later") from None
    except NsflError as exc:
        if exc.code == "Internal" or type(exc) is NsflError:
            log.error("%s failed: %s", dependency, exc.message)
            raise NsflError(CATALOGUE["Internal"].public_message) from None
        raise
