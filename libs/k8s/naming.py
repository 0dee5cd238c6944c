"""Names, labels and owner references of the Kubernetes objects nsfl creates for a job.

Why deterministic names: the scheduler may crash between "create the Pod"
and "record that it exists".  When it comes back it creates the same
objects again, and because their names depend only on the job and the
launch number, the API server answers 409 AlreadyExists instead of letting
a second coordinator start (DESIGN §4).  Nothing random goes into a name.

Why a launch number in the Pod's name only: Pods run with
``restartPolicy: Never``, so a relaunch (a crash, a restart of a finished
job) needs a new Pod while the old one, ended, still exists for its logs.
The scheduler persists launch *n* before it launches, so ``-r<n>`` is
unique across the job's life.  The Service keeps one name per job, so the
endpoint clients dial survives relaunches.

Kubernetes limits: Service names are DNS-1035 labels (at most 63
characters, starting with a letter), Pod host names and label values at
most 63 characters.  Job names are DNS-1123 labels of up to 63 characters,
so ``nsfl-coord-<name>`` can be too long; such names keep a readable prefix
and end with a hash of the whole, so two long names that share a prefix
still differ.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TypedDict

from libs.jobspec import API_VERSION, KIND
from libs.k8s.manifests import OwnerReference

MAX_NAME_LENGTH = 63
NAME_PREFIX = "nsfl-coord-"
HASH_LENGTH = 8
COMPONENT = "coordinator"
MANAGED_BY = "nsfl-job-scheduler"
JOB_LABEL = "nsfl.io/job"
LAUNCH_LABEL = "nsfl.io/launch"
SPEC_HASH_ANNOTATION = "nsfl.io/spec-sha256"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class OwnerRef(TypedDict):
    """The FederatedJob that owns a coordinator's objects, as the builders need it."""

    apiVersion: str
    kind: str
    name: str
    uid: str


def shortened(name: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """``name`` if it fits, else a prefix of it plus ``-`` and a hash of the whole ``name``."""
    if len(name) <= max_length:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_LENGTH]
    keep = max_length - HASH_LENGTH - 1
    return f"{name[:keep].rstrip('-')}-{digest}"


def coordinator_name(job_name: str) -> str:
    """The per-job name of the coordinator's Service: ``nsfl-coord-<job>`` (at most 63 characters)."""
    _check_job_name(job_name)
    return shortened(NAME_PREFIX + job_name)


def coordinator_pod_name(job_name: str, launch: int) -> str:
    """The name of launch ``launch`` of the job's coordinator Pod (and its ConfigMap and Secret).

    ``nsfl-coord-<job>-r<launch>``: the suffix always survives shortening, so
    two launches of a job with a very long name still differ.
    """
    _check_job_name(job_name)
    if isinstance(launch, bool) or not isinstance(launch, int) or launch < 0:
        raise ValueError(f"a launch number is a non-negative int, got {launch!r}")
    suffix = f"-r{launch}"
    return shortened(NAME_PREFIX + job_name, MAX_NAME_LENGTH - len(suffix)) + suffix


def selector_labels(job_name: str) -> dict[str, str]:
    """The labels a coordinator's Service selects its Pod by (every launch of one job)."""
    return {
        "app.kubernetes.io/name": "nsfl",
        "app.kubernetes.io/component": COMPONENT,
        JOB_LABEL: job_name,
    }


def coordinator_labels(job_name: str) -> dict[str, str]:
    """The recommended ``app.kubernetes.io/*`` labels plus ``nsfl.io/job`` for a job's objects."""
    return {
        "app.kubernetes.io/name": "nsfl",
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/instance": job_name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "nsfl",
        JOB_LABEL: job_name,
    }


def owner_reference(owner: OwnerRef, job_name: str) -> OwnerReference:
    """The ownerReference that makes the FederatedJob the controller of an object.

    ``controller: true`` lets ``kubectl`` and the garbage collector see who
    manages the object; ``blockOwnerDeletion: true`` makes a foreground
    deletion of the FederatedJob wait for its coordinator objects.  The owner
    must be the job's own FederatedJob: Kubernetes ignores a namespaced
    owner in another namespace (and then deletes the dependent), so a wrong
    owner is a bug worth failing on here.
    """
    if owner.get("apiVersion") != API_VERSION or owner.get("kind") != KIND:
        raise ValueError(
            f"the owner must be a {API_VERSION} {KIND}, got {owner.get('apiVersion')} {owner.get('kind')}"
        )
    if owner.get("name") != job_name:
        raise ValueError(f"the owner {owner.get('name')!r} is not the job's FederatedJob {job_name!r}")
    if not owner.get("uid"):
        raise ValueError("the owner needs the FederatedJob's metadata.uid")
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owner_of(federated_job: Mapping[str, object]) -> OwnerRef:
    """The :class:`OwnerRef` of a FederatedJob object as read from the API (``metadata.uid`` set)."""
    metadata = federated_job.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ValueError("a FederatedJob object has metadata")
    return OwnerRef(
        apiVersion=str(federated_job.get("apiVersion", "")),
        kind=str(federated_job.get("kind", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
    )


def _check_job_name(job_name: str) -> None:
    if not isinstance(job_name, str) or len(job_name) > MAX_NAME_LENGTH or not _DNS_LABEL.fullmatch(job_name):
        raise ValueError(f"a job name is a DNS-1123 label of at most 63 characters, got {job_name!r}")
