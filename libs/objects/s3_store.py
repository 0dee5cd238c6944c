"""The object store on S3 or MinIO, through the ``minio`` client (Kubernetes mode).

The client is synchronous; every call runs in a worker thread
(``asyncio.to_thread``) so the event loop never waits on the network.

Writing.  S3 has no rename, so "nothing is visible until verified" is
reached differently from the file backend: ``put`` first spools the stream
into an anonymous temporary file (bounded memory, hashed on the way, the
size limit enforced before a byte too many is written), checks the SHA-256,
and only then uploads, with the digest in the user metadata
``x-amz-meta-sha256`` (bytes the caller already holds in memory are hashed
and uploaded from there, without a spool).  A single PUT is atomic in S3; a multipart upload
(objects above ``part_size``) becomes visible only when completed, and the
client aborts it on failure, so a failed put never shows a partial object
and an earlier object under the key stays as it was.  Parts are read from
the spool one at a time, so memory stays about ``part_size`` ×
``parallel_uploads``.

Reading streams the HTTP response in chunks; from offset 0 the content is
verified against ``x-amz-meta-sha256`` of that same response, so a
concurrent overwrite cannot cause a false mismatch.  An object written by
another tool has no such metadata: it is listed with an empty ``sha256`` and
read unverified.

Listing uses MinIO's ``metadata=true`` extension to get checksums in the
listing itself; a server that ignores it (AWS, moto) costs one HEAD per object,
run a few at a time.

Failures follow :mod:`libs.objects.s3_errors`: connection problems are
Unavailable after a few quick retries (``retries``, ``connect_timeout``), not
after minutes of the client's defaults.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from libs.errors import ChecksumMismatch, InvalidKey, NotFound, Unavailable, ValidationFailed
from libs.objects.base import ObjectStoreBase
from libs.objects.keys import is_valid_key, prefix_segments, validate_key
from libs.objects.protocol import DEFAULT_CHUNK_SIZE, ObjectInfo, PutData
from libs.objects.s3_errors import translate
from libs.objects.streaming import (
    Verifier,
    check_max_size,
    check_put_data,
    check_read_arguments,
    normalize_sha256,
    pump,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

SHA256_METADATA = "sha256"  # sent as x-amz-meta-sha256
_SHA256_HEADERS = ("x-amz-meta-sha256", "sha256")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MIN_PART_SIZE = 5 << 20  # S3's lower bound for every part but the last
MAX_PART_SIZE = 5 << 30


@dataclass(frozen=True)
class S3Settings:
    """Where and how to reach the bucket.  Credentials never show in ``repr``."""

    bucket: str
    endpoint: str = "s3.amazonaws.com"  # host[:port], no scheme
    secure: bool = True
    region: str = "us-east-1"  # given, so the client never asks the server for it
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    base_prefix: str = ""  # every key is stored under "<base_prefix>/" when set
    create_bucket: bool = False
    part_size: int = 16 << 20
    parallel_uploads: int = 2
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    retries: int = 3
    spool_dir: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    list_user_metadata: bool = True

    def validate(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket) or ".." in self.bucket:
            raise ValidationFailed(f"{self.bucket!r} is not a valid S3 bucket name")
        if not self.endpoint or "/" in self.endpoint or "@" in self.endpoint:
            raise ValidationFailed("the S3 endpoint must be host[:port], without scheme, path or user")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValidationFailed("give both an S3 access key and a secret key, or neither")
        if self.base_prefix:
            validate_key(self.base_prefix)
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ValidationFailed(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if (
            self.parallel_uploads < 1
            or self.retries < 0
            or self.connect_timeout <= 0
            or self.read_timeout <= 0
        ):
            raise ValidationFailed("parallel_uploads must be >= 1, retries >= 0 and timeouts > 0")
        check_read_arguments(self.chunk_size, 0)

    @property
    def location(self) -> str:
        """Endpoint and bucket for messages and logs (no credentials)."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}/{self.bucket}"


def _ignore(chunk: Any) -> None:
    """The sink for data already in memory: pump only hashes it and checks its size."""


def _sha256_of(metadata: Mapping[str, Any] | None) -> str:
    for name, value in (metadata or {}).items():
        if (
            name.lower() in _SHA256_HEADERS
            and isinstance(value, str)
            and _SHA256_HEX.fullmatch(value.lower())
        ):
            return value.lower()
    return ""


class S3ObjectStore(ObjectStoreBase):
    """Objects in one bucket (optionally under a base prefix); see the module docstring."""

    def __init__(self, settings: S3Settings) -> None:
        settings.validate()
        self._settings = settings
        self._bucket = settings.bucket
        self._base = f"{settings.base_prefix}/" if settings.base_prefix else ""
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
            maxsize=max(10, settings.parallel_uploads * 2),
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=settings.retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self._client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            session_token=settings.session_token,
            secure=settings.secure,
            region=settings.region,
            http_client=self._http,
        )
        self._bucket_checked = False
        self._bucket_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"S3ObjectStore({self._settings.location!r})"

    def _name(self, key: str) -> str:
        return self._base + key

    async def _call(self, key: str | None, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except Exception as exc:
            raise translate(exc, key=key, where=self._settings.location) from exc

    async def _ensure_bucket(self) -> None:
        """Check the bucket once (creating it if allowed) before the first operation."""
        if self._bucket_checked:
            return
        async with self._bucket_lock:
            if self._bucket_checked:
                return
            if not await self._call(None, self._client.bucket_exists, self._bucket):
                if not self._settings.create_bucket:
                    raise NotFound(
                        f"bucket {self._bucket!r} does not exist at {self._settings.location}; "
                        "create it or allow create_bucket"
                    )
                await self._call(None, self._make_bucket)
            self._bucket_checked = True

    def _make_bucket(self) -> None:
        try:
            self._client.make_bucket(self._bucket, location=self._settings.region)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        logger.info("created bucket %s", self._settings.location)

    # -- writing ---------------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: PutData,
        *,
        expected_sha256: str | None = None,
        max_size: int | None = None,
    ) -> ObjectInfo:
        validate_key(key)
        expected = normalize_sha256(expected_sha256)
        check_max_size(max_size)
        check_put_data(data)
        await self._ensure_bucket()
        spool: BinaryIO
        sink: Callable[[Any], object]
        if isinstance(data, bytes | bytearray | memoryview):
            # Already in memory: spooling to disk would only add I/O.  A private
            # copy (free for bytes) so that what is hashed is what is uploaded.
            data = bytes(data)
            spool, sink = io.BytesIO(data), _ignore
        else:
            spool = await asyncio.to_thread(tempfile.TemporaryFile, dir=self._settings.spool_dir)
            sink = spool.write
        handed_over = False
        try:
            size, sha256 = await pump(data, sink, max_size=max_size, chunk_size=self._settings.chunk_size)
            if expected is not None and sha256 != expected:
                raise ChecksumMismatch(
                    f"the content sent for key {key!r} does not match expected_sha256; nothing was stored",
                    details={"key": key, "expected": expected, "actual": sha256},
                )
            handed_over = True  # the worker closes the spool, even if we are cancelled meanwhile
            await self._call(key, self._upload, key, spool, size, sha256)
        finally:
            if not handed_over:
                spool.close()
        return ObjectInfo(key=key, size=size, sha256=sha256)

    def _upload(self, key: str, spool: BinaryIO, size: int, sha256: str) -> None:
        try:
            spool.seek(0)
            self._client.put_object(
                self._bucket,
                self._name(key),
                spool,
                size,
                metadata={SHA256_METADATA: sha256},
                part_size=self._settings.part_size,
                num_parallel_uploads=self._settings.parallel_uploads,
            )
        finally:
            spool.close()

    # -- reading ---------------------------------------------------------------------------------

    def open(
        self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, offset: int = 0
    ) -> AsyncIterator[bytes]:
        validate_key(key)
        check_read_arguments(chunk_size, offset)
        return self._stream(key, chunk_size, offset)

    def _get(self, key: str, offset: int) -> urllib3.BaseHTTPResponse | None:
        """The GET response from ``offset``, or None when the offset is not inside the object."""
        try:
            return self._client.get_object(self._bucket, self._name(key), offset=offset)
        except S3Error as exc:
            if exc.code == "InvalidRange":
                return None
            raise

    async def _stream(self, key: str, chunk_size: int, offset: int) -> AsyncIterator[bytes]:
        await self._ensure_bucket()
        response = await self._call(key, self._get, key, offset)
        if response is None:
            size = (await self.stat(key)).size
            if offset == size:
                return
            raise ValidationFailed(f"offset {offset} is beyond the end of object {key!r} ({size} bytes)")
        try:
            verifier = Verifier(key, _sha256_of(response.headers)) if offset == 0 else None

            def read_chunk() -> bytes:
                chunk = response.read(chunk_size)
                if verifier is not None:
                    verifier.update(chunk)
                return chunk

            while chunk := await self._call(key, read_chunk):
                yield chunk
            if verifier is not None:
                verifier.finish()
        finally:
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        await self._ensure_bucket()
        found = await self._call(key, self._client.stat_object, self._bucket, self._name(key))
        return ObjectInfo(key=key, size=found.size or 0, sha256=_sha256_of(found.metadata))

    # -- listing and deleting --------------------------------------------------------------------

    def _list_names(self, prefix: str, with_metadata: bool) -> list[Object]:
        listing = self._client.list_objects(
            self._bucket, prefix=self._name(prefix), recursive=True, include_user_meta=with_metadata
        )
        return [found for found in listing if found.object_name and not found.is_dir]

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        prefix_segments(prefix)
        await self._ensure_bucket()
        listed = await self._call(None, self._list_names, prefix, self._settings.list_user_metadata)
        infos: list[ObjectInfo] = []
        unknown: list[str] = []
        for found in listed:
            key = (found.object_name or "")[len(self._base) :]
            if not is_valid_key(key):
                continue  # written by another tool under a name nsfl cannot address
            sha256 = _sha256_of(found.metadata)
            if sha256:
                infos.append(ObjectInfo(key=key, size=found.size or 0, sha256=sha256))
            else:
                unknown.append(key)
        infos.extend(await self._stat_many(unknown))
        return sorted(infos, key=lambda info: info.key)

    async def _stat_many(self, keys: Iterable[str]) -> builtins.list[ObjectInfo]:
        """HEAD each key, a few at a time; keys deleted meanwhile are left out."""
        gate = asyncio.Semaphore(8)

        async def one(key: str) -> ObjectInfo | None:
            async with gate:
                try:
                    return await self.stat(key)
                except NotFound:
                    return None

        return [info for info in await asyncio.gather(*(one(key) for key in keys)) if info is not None]

    async def delete(self, key: str) -> bool:
        validate_key(key)
        await self._ensure_bucket()
        # S3's DELETE succeeds whether or not the object exists: ask first to return a truthful bool.
        try:
            await self._call(key, self._client.stat_object, self._bucket, self._name(key))
        except NotFound:
            return False
        await self._call(key, self._client.remove_object, self._bucket, self._name(key))
        return True

    def _remove_all(self, names: builtins.list[str]) -> int:
        errors = list(self._client.remove_objects(self._bucket, (DeleteObject(name) for name in names)))
        if errors:
            codes = sorted({error.code for error in errors})
            raise Unavailable(
                f"the object store at {self._settings.location} could not delete {len(errors)} "
                f"of {len(names)} objects ({', '.join(codes)}); retry"
            )
        return len(names)

    async def delete_prefix(self, prefix: str) -> int:
        prefix_segments(prefix)
        if prefix == "":
            raise InvalidKey(
                "delete_prefix needs a non-empty prefix; it will not delete every object at once"
            )
        await self._ensure_bucket()
        listed = await self._call(None, self._list_names, prefix, False)
        names = [found.object_name for found in listed if found.object_name]
        if not names:
            return 0
        return await self._call(None, self._remove_all, names)

    async def close(self) -> None:
        self._http.clear()
