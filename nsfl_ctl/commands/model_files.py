"""``nsfl-ctl upload model`` and ``nsfl-ctl download model``: safetensors files in and out of the registry.

Both stream.  An upload announces the file's SHA-256 (``?sha256=``), so the
server refuses a file that changed or was cut off on the way rather than
storing it; the digest is computed first, in one pass over the file.  A
download goes to a hidden partial file next to the target, is checked
against the size and the SHA-256 the server announces, and only then
renamed into place: the target is the whole verified file or untouched.
An existing target is not overwritten without ``--force``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import click

from libs.errors import AlreadyExists, NotFound
from nsfl_ctl.client import ApiClient, path_of
from nsfl_ctl.commands.common import Session, model_path, namespace_option, pass_session
from nsfl_ctl.output import emit, output_option, size

HASH_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def upload_version(client: ApiClient, namespace: str, name: str, weights: Path, description: str) -> Any:
    """PUT ``weights`` as the model's next version; the new version as the API describes it.

    The model is looked up first: a server refusing an upload (404) before
    reading it may close the connection while the file is still being sent,
    which would surface as a broken connection instead of its real answer.
    """
    client.get(model_path(namespace, name))
    query = {"sha256": file_sha256(weights), "description": description or None}
    return client.upload("PUT", model_path(namespace, name) + "/versions", weights, query=query)


@click.group("upload")
def upload_group() -> None:
    """Upload a model version."""


@upload_group.command("model")
@click.argument("name")
@click.option("-f", "--file", "weights", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The safetensors file.")  # fmt: skip
@click.option("--description", default="", help="What this version is.")
@namespace_option
@output_option
@pass_session
def upload_model(
    session: Session, name: str, weights: Path, description: str, namespace: str | None, output: str
) -> None:
    """Upload a safetensors file as the next version of model NAME."""
    target = session.namespace(namespace)
    version = upload_version(session.client(), target, name, weights, description)
    if output != "table":
        emit(version, output)
        return
    click.echo(
        f"model {target}/{name} version {version.get('version')} uploaded ({size(version.get('size'))})"
    )


@click.group("download")
def download_group() -> None:
    """Download a model version."""


@download_group.command("model")
@click.argument("name")
@click.option("--version", "number", type=click.IntRange(min=1), help="The version (default: the latest).")
@click.option("-f", "--file", "target", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it (default: NAME-vVERSION.safetensors here).")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
@namespace_option
@pass_session
def download_model(
    session: Session, name: str, number: int | None, target: Path | None, force: bool, namespace: str | None
) -> None:
    """Download a version of model NAME (a safetensors file), checked against its SHA-256."""
    where = session.namespace(namespace)
    client = session.client()
    model = client.get(model_path(where, name))
    chosen = number if number is not None else model.get("latest")
    if chosen is None:
        raise NotFound(f"model {name!r} has no versions yet; upload one with nsfl-ctl upload model")
    versions = {v.get("version"): v for v in model.get("versions") or []}
    if chosen not in versions:
        raise NotFound(f"model {name!r} has no version {chosen}")
    path = target or Path(f"{name}-v{chosen}.safetensors")
    if path.exists() and not force:
        raise AlreadyExists(f"{path} exists; pass --force to overwrite it or -f to choose another file")
    url = path_of("api", "v1", "namespaces", where, "models", name, "versions", str(chosen), "download")
    download = client.download(url, path, expected_sha256=versions[chosen].get("sha256"))
    click.echo(f"model {where}/{name} version {chosen} written to {download.path} "
               f"({size(download.size)}, sha256 {download.sha256[:12]})")  # fmt: skip
