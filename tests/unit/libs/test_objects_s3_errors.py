"""What the minio client raises becomes the nsfl error a caller can act on, without leaking request details."""

from __future__ import annotations

import pytest
import urllib3
from minio.error import S3Error, ServerError

from libs.errors import NotFound, NsflError, Unavailable
from libs.objects.s3_errors import translate

WHERE = "http://127.0.0.1:9000/bucket"


def s3_error(code: str) -> S3Error:
    response = urllib3.HTTPResponse(body=b"", status=400)
    return S3Error(
        response, code, "message with /bucket/key?X-Amz-Signature=abc", "/bucket/key", "req", "host"
    )


def test_no_such_key_is_not_found_naming_the_key() -> None:
    error = translate(s3_error("NoSuchKey"), key="ns/k", where=WHERE)
    assert isinstance(error, NotFound)
    assert "ns/k" in error.message


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "SlowDown"])
def test_refused_credentials_and_throttling_are_unavailable(code: str) -> None:
    error = translate(s3_error(code), key="k", where=WHERE)
    assert isinstance(error, Unavailable)
    assert code in error.message and "Signature=" not in error.message


def test_connection_failures_and_server_errors_are_unavailable_without_the_exception_text() -> None:
    refused = urllib3.exceptions.MaxRetryError(None, "/bucket/k?X-Amz-Credential=AKIA", reason=None)  # type: ignore[arg-type]
    for raised in (refused, ConnectionResetError("reset"), ServerError("boom 503", 503)):
        error = translate(raised, key="k", where=WHERE)
        assert isinstance(error, Unavailable)
        assert WHERE in error.message and "AKIA" not in error.message


def test_other_s3_codes_are_internal_errors_naming_the_code_and_nsfl_errors_pass_through() -> None:
    error = translate(s3_error("MalformedXML"), key="k", where=WHERE)
    assert type(error) is NsflError and "MalformedXML" in error.message
    original = NotFound("already translated")
    assert translate(original, key="k", where=WHERE) is original
    unrelated = ValueError("a bug")
    assert translate(unrelated, key="k", where=WHERE) is unrelated
