"""Deterministic names, labels and owner references of a job's coordinator objects."""

from __future__ import annotations

import re

import pytest

from libs.k8s.naming import (
    OwnerRef,
    coordinator_labels,
    coordinator_name,
    coordinator_pod_name,
    owner_of,
    owner_reference,
    selector_labels,
    shortened,
)

DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
OWNER = OwnerRef(apiVersion="nsfl.io/v1alpha1", kind="FederatedJob", name="digits", uid="uid-1")


def test_names_are_the_job_name_with_a_prefix_and_the_launch() -> None:
    assert coordinator_name("digits") == "nsfl-coord-digits"
    assert coordinator_pod_name("digits", 1) == "nsfl-coord-digits-r1"
    assert coordinator_pod_name("digits", 12) == "nsfl-coord-digits-r12"


def test_names_are_the_same_every_time_so_a_recreate_is_idempotent() -> None:
    assert coordinator_pod_name("a" * 63, 3) == coordinator_pod_name("a" * 63, 3)
    assert coordinator_name("b" * 63) == coordinator_name("b" * 63)


@pytest.mark.parametrize("job", ["x", "a" * 52, "a" * 53, "a" * 63, "a-" * 31 + "a", "0" * 63])
@pytest.mark.parametrize("launch", [0, 1, 99, 123456])
def test_long_names_fit_63_characters_and_stay_dns_1035_labels(job: str, launch: int) -> None:
    for name in (coordinator_name(job), coordinator_pod_name(job, launch)):
        assert len(name) <= 63
        assert DNS_1035.fullmatch(name), name
    assert coordinator_pod_name(job, launch).endswith(f"-r{launch}")


def test_long_names_sharing_a_prefix_still_differ() -> None:
    first, second = "a" * 60 + "xyz", "a" * 60 + "xyw"
    assert coordinator_name(first) != coordinator_name(second)
    assert coordinator_pod_name(first, 1) != coordinator_pod_name(second, 1)
    assert coordinator_pod_name(first, 1) != coordinator_pod_name(first, 2)


def test_shortened_keeps_short_names_and_never_ends_a_prefix_with_a_dash() -> None:
    assert shortened("short") == "short"
    name = shortened("a" * 53 + "-" + "b" * 20)
    assert len(name) <= 63 and "--" not in name and name.startswith("a" * 53)


@pytest.mark.parametrize("bad", ["", "UPPER", "-x", "x-", "a" * 64, "a.b"])
def test_names_refuse_what_is_not_a_job_name(bad: str) -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        coordinator_name(bad)


@pytest.mark.parametrize("launch", [-1, True, 1.0])
def test_pod_names_refuse_what_is_not_a_launch_number(launch: object) -> None:
    with pytest.raises(ValueError, match="launch"):
        coordinator_pod_name("digits", launch)  # type: ignore[arg-type]


def test_labels_follow_the_kubernetes_recommendations() -> None:
    assert coordinator_labels("digits") == {
        "app.kubernetes.io/name": "nsfl",
        "app.kubernetes.io/component": "coordinator",
        "app.kubernetes.io/instance": "digits",
        "app.kubernetes.io/managed-by": "nsfl-job-scheduler",
        "app.kubernetes.io/part-of": "nsfl",
        "nsfl.io/job": "digits",
    }
    assert selector_labels("digits").items() <= coordinator_labels("digits").items()


def test_the_federated_job_controls_and_blocks_deletion_of_its_objects() -> None:
    assert owner_reference(OWNER, "digits") == {
        "apiVersion": "nsfl.io/v1alpha1",
        "kind": "FederatedJob",
        "name": "digits",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


@pytest.mark.parametrize(
    ("owner", "match"),
    [
        ({**OWNER, "kind": "Deployment"}, "must be a nsfl.io/v1alpha1 FederatedJob"),
        ({**OWNER, "name": "other"}, "not the job's FederatedJob"),
        ({**OWNER, "uid": ""}, "uid"),
    ],
)
def test_an_owner_that_is_not_the_jobs_own_federated_job_is_a_bug(owner: OwnerRef, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        owner_reference(owner, "digits")


def test_owner_of_reads_a_federated_job_as_the_api_returns_it() -> None:
    body = {"apiVersion": "nsfl.io/v1alpha1", "kind": "FederatedJob",
            "metadata": {"name": "digits", "namespace": "team-a", "uid": "uid-1", "generation": 2}}  # fmt: skip
    assert owner_of(body) == OWNER
