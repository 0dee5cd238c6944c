"""Kubernetes helpers that *build* objects: pure functions, no client, no kopf.

The crate-operator habit (STYLE.md): what a Kubernetes object looks like
is decided here, by functions that take values and return dicts, and is
unit-tested and checked against the real Kubernetes schemas offline; the
adapters that *apply* objects (the kopf operator and the Kubernetes
platform in ``job_scheduler``) stay thin.  This package imports neither
``kubernetes`` nor ``kopf`` (the import-layer rule of STYLE.md §3).

- :mod:`~libs.k8s.crd`: the ``FederatedJob`` CRD, and the command that
  keeps ``deploy/kubernetes/base/crd-federatedjobs.yaml`` in step (not
  imported here, so ``python -m libs.k8s.crd`` runs it only once).
- :mod:`~libs.k8s.naming`: deterministic names, labels, owner references.
- :mod:`~libs.k8s.pod_settings`: :class:`CoordinatorPodSettings`.
- :mod:`~libs.k8s.objects`: a job's coordinator Pod, Service, ConfigMap, Secret.
- :mod:`~libs.k8s.pod_outcomes`: what a coordinator Pod's status means.
- :mod:`~libs.k8s.status`: a FederatedJob's ``.status`` from a job document.
"""

from libs.k8s.naming import OwnerRef, coordinator_labels, coordinator_name, coordinator_pod_name, owner_of
from libs.k8s.objects import (
    coordinator_configmap,
    coordinator_objects,
    coordinator_pod,
    coordinator_resources,
    coordinator_secret,
    coordinator_service,
)
from libs.k8s.pod_outcomes import CoordinatorPodState, PodOutcome, pod_phase_outcome
from libs.k8s.pod_settings import COORDINATOR_PORT, CoordinatorPodSettings
from libs.k8s.status import federatedjob_status_patch

__all__ = [
    "COORDINATOR_PORT",
    "CoordinatorPodSettings",
    "CoordinatorPodState",
    "OwnerRef",
    "PodOutcome",
    "coordinator_configmap",
    "coordinator_labels",
    "coordinator_name",
    "coordinator_objects",
    "coordinator_pod",
    "coordinator_pod_name",
    "coordinator_resources",
    "coordinator_secret",
    "coordinator_service",
    "federatedjob_status_patch",
    "owner_of",
    "pod_phase_outcome",
]
