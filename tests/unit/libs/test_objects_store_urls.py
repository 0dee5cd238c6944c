"""open_object_store: one URL string picks and configures the backend, and never carries secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.errors import InvalidKey, ValidationFailed
from libs.objects import FileObjectStore, S3ObjectStore, open_object_store
from libs.objects.store_urls import parse_s3_url


def test_a_file_url_opens_a_file_store_and_creates_its_root(tmp_path: Path) -> None:
    store = open_object_store(f"file://{tmp_path}/objects?fsync=false")
    assert isinstance(store, FileObjectStore)
    assert store.root == tmp_path / "objects"
    assert store.root.is_dir()


def test_a_file_url_must_name_an_absolute_local_path() -> None:
    with pytest.raises(ValidationFailed):
        open_object_store("file://remote-host/objects")
    with pytest.raises(ValidationFailed):
        open_object_store("file:relative/path")


def test_an_s3_url_gives_bucket_endpoint_security_and_base_prefix() -> None:
    settings = parse_s3_url(
        "s3://models/team/a?endpoint=http://127.0.0.1:9000&create_bucket=true&part_size=8388608",
        {"access_key": "AK", "secret_key": "SK"},
        environ={},
    )
    assert (settings.bucket, settings.endpoint, settings.secure) == ("models", "127.0.0.1:9000", False)
    assert (settings.base_prefix, settings.create_bucket, settings.part_size) == ("team/a", True, 8 << 20)
    assert "SK" not in repr(settings) and "AK" not in repr(settings)


def test_explicit_secure_wins_over_the_endpoint_scheme_and_options_over_the_query() -> None:
    settings = parse_s3_url("s3://b?endpoint=http://h:1&secure=true&retries=5", {"retries": 1}, environ={})
    assert (settings.secure, settings.retries) == (True, 1)


def test_s3_credentials_come_from_options_or_the_environment() -> None:
    environ = {"NSFL_S3_ACCESS_KEY": "env-ak", "NSFL_S3_SECRET_KEY": "env-sk"}
    from_env = parse_s3_url("s3://b?endpoint=h:1", {}, environ=environ)
    assert (from_env.access_key, from_env.secret_key) == ("env-ak", "env-sk")
    from_options = parse_s3_url(
        "s3://b?endpoint=h:1", {"access_key": "o-ak", "secret_key": "o-sk"}, environ=environ
    )
    assert (from_options.access_key, from_options.secret_key) == ("o-ak", "o-sk")


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIASECRET:hunter2@bucket?endpoint=h:1",
        "s3://bucket?endpoint=h:1&access_key=AKIASECRET&secret_key=hunter2",
        "s3://bucket?endpoint=http://AKIASECRET:hunter2@h:1",
    ],
)
def test_credentials_in_the_url_are_refused_without_being_repeated(url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        open_object_store(url)
    assert "hunter2" not in caught.value.message
    assert "AKIASECRET" not in caught.value.message


def test_open_object_store_returns_an_s3_store_without_touching_the_network() -> None:
    store = open_object_store(
        "s3://bucket?endpoint=http://127.0.0.1:1", access_key="AKIASECRET", secret_key="hunter2"
    )
    assert isinstance(store, S3ObjectStore)
    assert "hunter2" not in repr(store) and "AKIASECRET" not in repr(store)


@pytest.mark.parametrize(
    ("url", "options", "named"),
    [
        ("ftp://host/x", {}, "file:///"),
        ("/just/a/path", {}, "s3://"),
        ("s3://bucket?endpoint=h:1&colour=red", {}, "'colour'"),
        ("s3://bucket?endpoint=h:1", {"retries": "many"}, "'retries'"),
        ("s3://bucket?endpoint=h:1&secure=maybe", {}, "'secure'"),
        ("s3://bucket?endpoint=h:1&retries=1&retries=2", {}, "more than once"),
        ("s3://Bad_Bucket?endpoint=h:1", {}, "bucket name"),
        ("s3://bucket?endpoint=h:1", {"access_key": "only-one"}, "both"),
        ("s3://bucket?endpoint=h:1&part_size=1024", {}, "part_size"),
        ("s3://bucket?endpoint=ftp://h:1", {}, "endpoint"),
        ("file:///tmp/nsfl-never-created?colour=red", {}, "'colour'"),
    ],
)
def test_bad_locations_are_validation_errors_naming_the_problem(
    url: str, options: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        open_object_store(url, **options)
    assert named in caught.value.message


def test_a_base_prefix_must_be_a_valid_key() -> None:
    with pytest.raises(InvalidKey):
        open_object_store("s3://bucket/a/../b?endpoint=h:1")
