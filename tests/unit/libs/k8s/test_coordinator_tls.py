"""How a coordinator Pod gets its certificate: the per-job Secret and the read-only mounts, built purely."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from libs.jobspec import JobSpec
from libs.k8s import CoordinatorPodSettings, OwnerRef, coordinator_pod
from libs.k8s.coordinator_tls import (
    coordinator_tls_paths,
    coordinator_tls_secret,
    coordinator_tls_secret_name,
    with_coordinator_wire,
)
from tests.unit.libs.k8s.kube_schemas import kubernetes_problems

OWNER = OwnerRef(apiVersion="nsfl.io/v1alpha1", kind="FederatedJob", name="digits", uid="0b5c-uid")
PEMS = {"ca_pem": b"-----CA-----\n", "cert_pem": b"-----LEAF-----\n", "key_pem": b"-----KEY-----\n"}
ENV = {"NSFL_COORDINATOR_TLS_CERT": "/etc/nsfl/tls/tls.crt", "NSFL_COORDINATOR_TRUST_DOMAIN": "nsfl.local"}


def pod() -> dict[str, Any]:
    spec = JobSpec.parse({"name": "digits", "namespace": "team-a", "runtime": "pytorch", "taskEntry": "train"})
    return coordinator_pod(spec, owner=OWNER, image="nsfl/coordinator:1", settings=CoordinatorPodSettings(),
                           launch=3)  # fmt: skip


def secret(**changes: Any) -> dict[str, Any]:
    return coordinator_tls_secret("team-a", "digits", owner=OWNER, launch=3, **{**PEMS, **changes})


def test_the_secret_holds_the_three_files_in_cert_managers_layout_owned_by_the_job() -> None:
    built = secret()
    assert built["metadata"]["name"] == coordinator_tls_secret_name("digits") == "nsfl-coord-digits-tls"
    assert built["type"] == "kubernetes.io/tls"
    assert {k: base64.b64decode(v) for k, v in built["data"].items()} == {
        "ca.crt": PEMS["ca_pem"], "tls.crt": PEMS["cert_pem"], "tls.key": PEMS["key_pem"]}  # fmt: skip
    assert built["metadata"]["ownerReferences"][0]["uid"] == "0b5c-uid"
    assert built["metadata"]["labels"]["nsfl.io/job"] == "digits"
    assert built["metadata"]["annotations"] == {"nsfl.io/launch": "3"}
    assert kubernetes_problems(built) == []
    with pytest.raises(ValueError, match="key must not be empty"):
        secret(key_pem=b"")


def test_the_pod_mounts_the_secret_read_only_and_the_optional_crl_and_is_told_where() -> None:
    original = pod()
    before = json.dumps(original, sort_keys=True)
    wired = with_coordinator_wire(original, environment=ENV, tls_secret="nsfl-coord-digits-tls")
    assert json.dumps(original, sort_keys=True) == before, "the input is not changed"
    assert kubernetes_problems(wired) == []
    volumes = {v["name"]: v for v in wired["spec"]["volumes"]}
    assert volumes["tls"] == {"name": "tls", "secret": {"secretName": "nsfl-coord-digits-tls", "defaultMode": 0o400}}
    assert volumes["crl"]["configMap"] == {"name": "nsfl-crl", "optional": True, "defaultMode": 0o444,
                                           "items": [{"key": "crl.pem", "path": "crl.pem"}]}  # fmt: skip
    (container,) = wired["spec"]["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/nsfl/tls"]["readOnly"] and mounts["/etc/nsfl/crl"]["readOnly"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NSFL_COORDINATOR_TLS_CERT"] == {"name": "NSFL_COORDINATOR_TLS_CERT", "value": "/etc/nsfl/tls/tls.crt"}
    assert set(coordinator_tls_paths().values()) == {
        "/etc/nsfl/tls/ca.crt", "/etc/nsfl/tls/tls.crt", "/etc/nsfl/tls/tls.key", "/etc/nsfl/crl/crl.pem"}  # fmt: skip


def test_a_plaintext_coordinator_gets_only_its_variables_and_a_variable_is_never_doubled() -> None:
    wired = with_coordinator_wire(pod(), environment={"NSFL_COORDINATOR_INSECURE": "true"}, tls_secret=None)
    assert wired["spec"]["volumes"] == pod()["spec"]["volumes"]
    again = with_coordinator_wire(wired, environment={"NSFL_COORDINATOR_INSECURE": "true"}, tls_secret=None)
    names = [e["name"] for e in again["spec"]["containers"][0]["env"]]
    assert names.count("NSFL_COORDINATOR_INSECURE") == 1
