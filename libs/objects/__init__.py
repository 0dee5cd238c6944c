"""Object storage: model weights, round deltas, checkpoints and outputs as streamed, checksummed objects.

Use it through the :class:`ObjectStore` protocol and one factory::

    from libs.objects import open_object_store, round_key

    store = open_object_store("file:///var/lib/nsfl/objects")          # standalone default
    store = open_object_store("s3://nsfl?endpoint=http://minio:9000",  # Kubernetes mode
                              create_bucket=True)                      # keys from NSFL_S3_* env
    info = await store.put(round_key("ns", "job1", 3, "global.safetensors"), stream)
    async for chunk in store.open(info.key):
        ...
    await store.close()

The layers, lowest first: :mod:`.keys` (what a key is), :mod:`.protocol`
(the interface), :mod:`.streaming` and :mod:`.base` (shared by the
backends), the backends :mod:`.file_store` (with :mod:`.rooted_paths` and
:mod:`.checksum_sidecars`) and :mod:`.s3_store` (with :mod:`.s3_errors`),
then :mod:`.store_urls` and this factory on top.  :mod:`.layout` says which
key holds what.
"""

from __future__ import annotations

from typing import Any

from libs.errors import ValidationFailed
from libs.objects.file_store import FileObjectStore
from libs.objects.keys import is_valid_key, validate_key, validate_prefix
from libs.objects.layout import (
    checkpoint_key,
    checkpoint_prefix,
    job_prefixes,
    model_key,
    output_key,
    output_prefix,
    round_key,
    round_prefix,
)
from libs.objects.protocol import DEFAULT_CHUNK_SIZE, ObjectInfo, ObjectStore, PutData
from libs.objects.s3_store import S3ObjectStore, S3Settings
from libs.objects.store_urls import SUPPORTED, parse_file_url, parse_s3_url

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FileObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "PutData",
    "S3ObjectStore",
    "S3Settings",
    "checkpoint_key",
    "checkpoint_prefix",
    "is_valid_key",
    "job_prefixes",
    "model_key",
    "open_object_store",
    "output_key",
    "output_prefix",
    "round_key",
    "round_prefix",
    "validate_key",
    "validate_prefix",
]


def open_object_store(url: str, **options: Any) -> ObjectStore:
    """The store at ``url``: ``file:///abs/path`` or ``s3://bucket[/prefix]?endpoint=...``.

    Options override query parameters; S3 credentials come from options or
    ``NSFL_S3_ACCESS_KEY``/``NSFL_S3_SECRET_KEY``, never from the URL.  No I/O
    happens here except creating a file store's root directory; an S3 bucket
    is checked (and created if ``create_bucket``) on first use.
    """
    if not isinstance(url, str):
        raise ValidationFailed(f"an object store URL must be a string; supported: {SUPPORTED}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "file":
        location = parse_file_url(url, options)
        return FileObjectStore(location.root, **location.options)
    if scheme == "s3":
        return S3ObjectStore(parse_s3_url(url, options))
    shown = f"{scheme!r}" if scheme.isalnum() else "in the URL"
    raise ValidationFailed(f"unsupported object store scheme {shown}; supported: {SUPPORTED}")
