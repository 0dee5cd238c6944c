"""Pure builders of how a coordinator Pod gets its certificate: a per-job Secret, mounted read-only.

The scheduler signs each launch's certificate (job lifetime plus a margin)
and hands it over as one Secret per job, ``<coordinator name>-tls``
(``nsfl-coord-<job>-tls``), in cert-manager's layout: ``ca.crt`` (the trust
bundle), ``tls.crt`` (the leaf, then the chain above it but the root) and
``tls.key``.  Owned by the FederatedJob like the Pod and the Service, so it
goes with the job.  A relaunch replaces its content with a new certificate;
the ended Pods of earlier launches no longer read it.

The Pod mounts it read-only at :data:`TLS_MOUNT_PATH` (mode 0400: the kubelet
adds group read for the Pod's ``fsGroup``, so only the coordinator's user
reads the key) and, when present, the revocation list from the optional
ConfigMap ``nsfl-crl`` (key ``crl.pem``) at :data:`CRL_MOUNT_PATH`; without
it the directory is empty and nothing counts as revoked.  Which variables
point the coordinator at these files is decided by the caller and passed in
as ``environment``, so the names live in one place.

Builders take values and return new dicts; they never change their inputs.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping

from libs.k8s.manifests import Pod, Secret
from libs.k8s.naming import (
    LAUNCH_LABEL,
    OwnerRef,
    coordinator_labels,
    coordinator_name,
    owner_reference,
)

TLS_MOUNT_PATH = "/etc/nsfl/tls"
CRL_MOUNT_PATH = "/etc/nsfl/crl"
CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
PRIVATE_KEY_KEY = "tls.key"
CRL_CONFIGMAP = "nsfl-crl"
CRL_KEY = "crl.pem"
TLS_VOLUME = "tls"
CRL_VOLUME = "crl"
TLS_SECRET_SUFFIX = "-tls"


def coordinator_tls_secret_name(job_name: str) -> str:
    """``nsfl-coord-<job>-tls`` (a Secret name may be longer than a Service's 63 characters)."""
    return coordinator_name(job_name) + TLS_SECRET_SUFFIX


def coordinator_tls_secret(
    namespace: str,
    job_name: str,
    *,
    owner: OwnerRef,
    launch: int,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
) -> Secret:
    """The Secret holding the coordinator certificate of launch ``launch`` (annotated with it)."""
    for what, value in (("trust bundle", ca_pem), ("certificate", cert_pem), ("key", key_pem)):
        if not value:
            raise ValueError(f"the coordinator's {what} must not be empty")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": coordinator_tls_secret_name(job_name),
            "namespace": namespace,
            "labels": coordinator_labels(job_name),
            "annotations": {LAUNCH_LABEL: str(launch)},
            "ownerReferences": [owner_reference(owner, job_name)],
        },
        "data": {
            CA_KEY: _b64(ca_pem),
            CERT_KEY: _b64(cert_pem),
            PRIVATE_KEY_KEY: _b64(key_pem),
        },
    }


def coordinator_tls_paths() -> dict[str, str]:
    """Where the coordinator finds each file inside its Pod: ``ca``, ``cert``, ``key``, ``crl``."""
    return {
        "ca": f"{TLS_MOUNT_PATH}/{CA_KEY}",
        "cert": f"{TLS_MOUNT_PATH}/{CERT_KEY}",
        "key": f"{TLS_MOUNT_PATH}/{PRIVATE_KEY_KEY}",
        "crl": f"{CRL_MOUNT_PATH}/{CRL_KEY}",
    }


def with_coordinator_wire(pod: Pod, *, environment: Mapping[str, str], tls_secret: str | None) -> Pod:
    """``pod`` with ``environment`` added to its container and, with ``tls_secret``, the TLS and CRL mounts.

    ``tls_secret`` None is a plaintext coordinator (an insecure scheduler's, loopback tests only):
    only the variables are added.
    """
    out = copy.deepcopy(pod)
    spec = out["spec"]
    container = spec["containers"][0]
    names = set(environment)
    container["env"] = [e for e in container.get("env", []) if e.get("name") not in names] + [
        {"name": name, "value": value} for name, value in environment.items()
    ]
    if tls_secret is None:
        return out
    container.setdefault("volumeMounts", []).extend([
        {"name": TLS_VOLUME, "mountPath": TLS_MOUNT_PATH, "readOnly": True},
        {"name": CRL_VOLUME, "mountPath": CRL_MOUNT_PATH, "readOnly": True},
    ])  # fmt: skip
    spec.setdefault("volumes", []).extend([
        {"name": TLS_VOLUME, "secret": {"secretName": tls_secret, "defaultMode": 0o400}},
        {
            "name": CRL_VOLUME,
            "configMap": {
                "name": CRL_CONFIGMAP,
                "optional": True,
                "defaultMode": 0o444,
                "items": [{"key": CRL_KEY, "path": CRL_KEY}],
            },
        },
    ])  # fmt: skip
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
