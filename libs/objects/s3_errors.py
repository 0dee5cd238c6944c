"""Turning what the ``minio`` client raises into nsfl errors.

The S3 backend must fail like the file backend (the contract suite checks the
classes), and callers above it map nsfl errors to HTTP and gRPC statuses via
the catalogue.  The client raises four kinds of things:

* :class:`minio.error.S3Error`: the server answered with an S3 error code.
  ``NoSuchKey`` is NotFound; refused credentials and throttling are
  Unavailable (a REST caller's 401 would blame *their* token, while the
  problem is the platform's configuration); anything else is an internal
  error naming the code.
* :class:`~minio.error.ServerError` / :class:`~minio.error.InvalidResponseError`:
  a 5xx or a body that is not S3 (a proxy in the way): Unavailable.
* urllib3 and socket errors (refused, reset, timed out, truncated body):
  Unavailable, which the catalogue turns into 503 + retry.

Messages name the endpoint and bucket and the error's *class or code* only:
never the exception text, which carries request URLs, and never credentials.
The original exception stays chained for the service log.
"""

from __future__ import annotations

import logging

import urllib3.exceptions
from minio.error import InvalidResponseError, S3Error, ServerError

from libs.errors import NotFound, NsflError, Unavailable

logger = logging.getLogger(__name__)

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchVersion"})
CREDENTIAL_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized"}
)


def translate(exc: BaseException, *, key: str | None, where: str) -> BaseException:
    """The nsfl error for ``exc`` raised while working on ``key`` at ``where``; others unchanged."""
    if isinstance(exc, NsflError):
        return exc
    if isinstance(exc, S3Error):
        return _from_s3_code(exc.code or "", key=key, where=where)
    if isinstance(exc, ServerError | InvalidResponseError):
        return _unavailable(where, f"it answered with an error ({type(exc).__name__})")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return _unavailable(where, f"it cannot be reached ({type(exc).__name__})")
    return exc


def _from_s3_code(code: str, *, key: str | None, where: str) -> NsflError:
    if code in NOT_FOUND_CODES and key is not None:
        return NotFound(f"no object under key {key!r}", details={"key": key})
    if code in NOT_FOUND_CODES or code == "NoSuchBucket":
        return NotFound(f"the bucket of the object store at {where} does not exist")
    if code in CREDENTIAL_CODES:
        return _unavailable(
            where, f"it refused nsfl's credentials ({code}); check NSFL_S3_ACCESS_KEY and NSFL_S3_SECRET_KEY"
        )
    if code in TRANSIENT_CODES:
        return _unavailable(where, f"it is busy or failing ({code})")
    return NsflError(f"the object store at {where} rejected the request ({code})", details={"s3_code": code})


def _unavailable(where: str, why: str) -> Unavailable:
    logger.warning("object store %s unavailable: %s", where, why)
    return Unavailable(f"the object store at {where} is unavailable: {why}; retry later")
