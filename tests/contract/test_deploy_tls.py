"""Contract: on Kubernetes every gRPC link is mutual TLS, with certificates from Secrets (issue 12, DESIGN §9).

What the manifests promise and these tests hold them to:

- each control-plane Deployment reads its identity from its own Secret in
  cert-manager's layout (``ca.crt``, ``tls.crt``, ``tls.key``), mounted
  read-only and whole (no ``subPath``, so a renewed Secret reaches the files
  and the component reloads them), through its ``NSFL_*_TLS_*`` settings;
  the revocation list is the optional ConfigMap ``nsfl-crl``; nothing sets
  ``insecure``;
- the scheduler also mounts the CA it signs coordinators' certificates with;
  the API server (with ``components/enrolment``) its PKI directory, read-only;
- the selector's external Service exposes only the selector's one port, and
  that port is mutual TLS;
- the guide's pilot commands build those Secrets from the files ``nsfl-ctl
  pki`` writes (the PKI directory layout of :class:`PkiDirectory`);
- ``components/cert-manager`` produces the same Secrets, each certificate
  carrying exactly the identity (``spiffe://`` URI) and the server name
  (:attr:`Identity.server_name`) the wire checks.

cert-manager's custom resources are not in kubernetes-validate's schemas, so
they are validated against :data:`CERT_MANAGER_SCHEMAS`, a closed subset of
cert-manager.io/v1 (the fields these manifests use, with cert-manager's
names and types); every built-in kind still goes through kubernetes-validate.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from libs.pki.directory import PkiDirectory
from libs.pki.identity import DEFAULT_TRUST_DOMAIN, Identity
from tests.contract.test_deploy import (
    KUSTOMIZE,
    OVERLAYS,
    RENDER_TIMEOUT_SECONDS,
    WORKLOADS,
    Yaml12Loader,
    made_by_hand,
    named,
    of_kind,
    overlay,
)
from tests.unit.libs.k8s.kube_schemas import kubernetes_problems

CONTROL_PLANE = {  # Deployment: (settings prefix, its TLS Secret, its control-plane identity)
    "nsfl-client-selector": ("NSFL_SELECTOR_", "nsfl-selector-tls", "selector"),
    "nsfl-job-scheduler": ("NSFL_SCHEDULER_", "nsfl-scheduler-tls", "scheduler"),
    "nsfl-api-server": ("NSFL_API_", "nsfl-api-server-tls", "api-server"),
}
TLS_FILES = {"TLS_CA": "ca.crt", "TLS_CERT": "tls.crt", "TLS_KEY": "tls.key"}
ISSUER_SECRET = "nsfl-coordinator-issuer"
PKI_SECRET = "nsfl-api-server-pki"
CRL = ("ConfigMap", "nsfl-crl", "crl.pem", True)
GUIDE_PKI = PkiDirectory(Path("nsfl-pki"))  # the directory the guide's commands make


# --- what a Pod sees ------------------------------------------------------------------------------


def mounted_files(workload: dict[str, Any]) -> dict[str, tuple[str, str, str, bool]]:
    """Path in the (one) container -> (kind, object name, key, optional) of each file a volume puts there."""
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        for field, kind, name_field in (
            ("secret", "Secret", "secretName"),
            ("configMap", "ConfigMap", "name"),
        ):
            if field in volume:
                source = volume[field]
                assert "subPath" not in mount, "a subPath mount never sees a renewed Secret or a new CRL"
                for item in source["items"]:
                    path = f"{mount['mountPath']}/{item['path']}"
                    files[path] = (kind, source[name_field], item["key"], bool(source.get("optional")))
    return files


def secret_mounts(workload: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(mount, secret volume source) of each Secret a workload's containers mount."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    return [
        (mount, volumes[mount["name"]]["secret"])
        for container in pod["containers"]
        for mount in container.get("volumeMounts", [])
        if "secret" in volumes.get(mount["name"], {})  # not a volumeClaimTemplate's
    ]


def settings_of(workload: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The container's plain settings: its ConfigMaps' variables, then literal ``env`` values (no Secrets)."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    namespace = workload["metadata"]["namespace"]
    environment: dict[str, str] = {}
    for entry in container.get("envFrom", []):
        configmap = named(tuple(o for o in objects if o["metadata"].get("namespace") == namespace),
                          "ConfigMap", entry["configMapRef"]["name"])  # fmt: skip
        environment.update(configmap["data"])
    environment.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return environment


# --- the control plane ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
@pytest.mark.parametrize("deployment", sorted(CONTROL_PLANE))
def test_every_control_plane_component_speaks_mutual_tls_from_its_own_secret(
    name: str, deployment: str
) -> None:
    objects = overlay(name)
    workload = named(objects, "Deployment", deployment)
    prefix, secret, _ = CONTROL_PLANE[deployment]
    environment = settings_of(workload, objects)
    files = mounted_files(workload)
    for setting, key in TLS_FILES.items():
        assert files[environment[prefix + setting]] == ("Secret", secret, key, False), setting
    assert files[environment[prefix + "TLS_CRL"]] == CRL
    assert environment[prefix + "TRUST_DOMAIN"] == DEFAULT_TRUST_DOMAIN
    assert not [key for key in environment if key.endswith("INSECURE")], (
        "plaintext is for loopback tests only"
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_secrets_are_mounted_read_only_and_keys_are_not_world_readable(name: str) -> None:
    for workload in of_kind(overlay(name), *WORKLOADS):
        for mount, secret in secret_mounts(workload):
            where = f"{workload['metadata']['name']}: {secret['secretName']}"
            assert mount.get("readOnly") is True, where
            assert secret["defaultMode"] & 0o007 == 0, where


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_scheduler_signs_coordinators_with_the_issuer_secret(name: str) -> None:
    objects = overlay(name)
    workload = named(objects, "Deployment", "nsfl-job-scheduler")
    environment = settings_of(workload, objects)
    files = mounted_files(workload)
    assert files[environment["NSFL_SCHEDULER_COORDINATOR_ISSUER_CERT"]] == (
        "Secret",
        ISSUER_SECRET,
        "tls.crt",
        False,
    )
    assert files[environment["NSFL_SCHEDULER_COORDINATOR_ISSUER_KEY"]] == (
        "Secret",
        ISSUER_SECRET,
        "tls.key",
        False,
    )


def test_the_dev_api_server_enrols_clients_from_a_read_only_pki_directory() -> None:
    objects = overlay("dev")
    workload = named(objects, "Deployment", "nsfl-api-server")
    pki = PkiDirectory(Path(settings_of(workload, objects)["NSFL_API_PKI_DIR"]))
    files = mounted_files(workload)
    for path in (pki.ca, pki.issuer, pki.issuer_key, pki.crl, pki.revoked):
        assert files[str(path)] == ("Secret", PKI_SECRET, path.name, False)
    prod = overlay("prod")
    assert "NSFL_API_PKI_DIR" not in settings_of(named(prod, "Deployment", "nsfl-api-server"), prod), (
        "enrolment is an optional component in production"
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_selector_exposes_nothing_but_its_mutual_tls_port(name: str) -> None:
    objects = overlay(name)
    workload = named(objects, "Deployment", "nsfl-client-selector")
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("grpc", 50051)]
    listen = settings_of(workload, objects)["NSFL_SELECTOR_LISTEN"]
    assert listen.rpartition(":")[2] == "50051", "the one port is the one the mTLS server listens on"
    external = named(objects, "Service", "nsfl-client-selector-external")
    assert [p["targetPort"] for p in external["spec"]["ports"]] == ["grpc"]


# --- the pilot's certificates, made by hand ---------------------------------------------------------


def test_the_guide_makes_every_tls_secret_from_the_files_nsfl_ctl_pki_writes() -> None:
    made = {o["metadata"]["name"]: o["data"] for o in made_by_hand() if o["kind"] == "Secret"}
    for _, secret, control in CONTROL_PLANE.values():
        files = GUIDE_PKI.issued(Identity.control(control))
        assert made[secret] == {
            "ca.crt": str(files.ca),
            "tls.crt": str(files.cert),
            "tls.key": str(files.key),
        }
    assert made[ISSUER_SECRET] == {"tls.crt": str(GUIDE_PKI.issuer), "tls.key": str(GUIDE_PKI.issuer_key)}
    pki = GUIDE_PKI
    assert made[PKI_SECRET] == {
        p.name: str(p) for p in (pki.ca, pki.issuer, pki.issuer_key, pki.crl, pki.revoked)
    }
    crls = {o["metadata"]["namespace"]: o["data"] for o in made_by_hand() if o["kind"] == "ConfigMap"}
    assert crls["nsfl-system"] == crls["default"] == {"crl.pem": str(GUIDE_PKI.crl)}


def test_the_guide_issues_each_control_plane_certificate_and_says_mutual_tls_is_done() -> None:
    guide = (KUSTOMIZE.parent / "README.md").read_text()
    assert f"nsfl-ctl pki init --dir {GUIDE_PKI.root}" in guide
    for _, _, control in CONTROL_PLANE.values():
        assert f"nsfl-ctl pki issue --dir {GUIDE_PKI.root} --control {control}\n" in guide
    assert "not yet" not in guide.lower(), "the deploy guide still lists something as not done"


# --- production: cert-manager --------------------------------------------------------------------


@functools.cache
def render_with_components(base: str, *components: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize`` of an overlay plus components, as a user's kustomization would combine them."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: the deploy tests render the manifests with `kubectl kustomize`")
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"nsfl-kustomize-{os.getpid()}-{'-'.join(components)}"
    folder.mkdir(parents=True, exist_ok=True)
    relative = Path(os.path.relpath(KUSTOMIZE, folder))  # kustomize refuses absolute paths
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(relative / base)], "components": [str(relative / c) for c in components],
    }))  # fmt: skip
    try:
        result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True,
                                timeout=RENDER_TIMEOUT_SECONDS, check=False)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {base} + {components} failed:\n{result.stderr[-4000:]}")
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=Yaml12Loader) if doc)


def production() -> tuple[dict[str, Any], ...]:
    return render_with_components("overlays/prod", "components/cert-manager", "components/enrolment")


_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"}
_USAGES = ["signing", "digital signature", "content commitment", "key encipherment", "key agreement",
           "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
           "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
           "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]  # fmt: skip
_METADATA = {
    "type": "object", "required": ["name", "namespace"], "additionalProperties": False,
    "properties": {"name": _NAME, "namespace": _NAME, "labels": {"type": "object"},
                   "annotations": {"type": "object"}},
}  # fmt: skip


def _resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {"apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": kind},
                       "metadata": _METADATA, "spec": spec},
    }  # fmt: skip


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


CERT_MANAGER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Issuer": _resource("Issuer", {
        **_closed({
            "selfSigned": _closed({"crlDistributionPoints": {"type": "array", "items": {"type": "string"}}}),
            "ca": _closed({"secretName": _NAME, "crlDistributionPoints": {"type": "array"},
                           "ocspServers": {"type": "array"}}, ("secretName",)),
        }),
        "minProperties": 1, "maxProperties": 1,
    }),
    "Certificate": _resource("Certificate", _closed({
        "secretName": _NAME,
        "commonName": {"type": "string", "maxLength": 64},
        "dnsNames": {"type": "array", "items": {"type": "string"}},
        "uris": {"type": "array", "items": {"type": "string"}},
        "ipAddresses": {"type": "array", "items": {"type": "string"}},
        "isCA": {"type": "boolean"},
        "duration": _DURATION,
        "renewBefore": _DURATION,
        "subject": _closed({"organizations": {"type": "array", "items": {"type": "string"}}}),
        "usages": {"type": "array", "items": {"enum": _USAGES}},
        "privateKey": _closed({
            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
            "encoding": {"enum": ["PKCS1", "PKCS8"]}, "rotationPolicy": {"enum": ["Never", "Always"]},
        }),
        "issuerRef": _closed({"name": _NAME, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                              "group": {"const": "cert-manager.io"}}, ("name",)),
    }, ("secretName", "issuerRef"))),
}  # fmt: skip


def test_the_cert_manager_component_renders_valid_objects() -> None:
    problems = []
    for obj in production():
        if obj["apiVersion"].startswith("cert-manager.io/"):
            # Not in kubernetes-validate's schemas: checked against the subset above instead.
            validator = jsonschema.Draft7Validator(CERT_MANAGER_SCHEMAS[obj["kind"]])
            problems += [
                f"{obj['kind']}/{obj['metadata']['name']}: {e.message}" for e in validator.iter_errors(obj)
            ]
        else:
            problems += kubernetes_problems(obj)
    assert problems == []


def certificates() -> dict[str, dict[str, Any]]:
    """Rendered Certificates by the Secret each produces."""
    return {c["spec"]["secretName"]: c["spec"] for c in of_kind(production(), "Certificate")}


def test_cert_manager_gives_each_component_a_certificate_of_its_identity_and_server_name() -> None:
    made = certificates()
    for _, secret, control in CONTROL_PLANE.values():
        identity = Identity.control(control)
        spec = made[secret]
        assert spec["uris"] == [identity.uri], "exactly one spiffe:// URI: the identity authorisation reads"
        assert spec["dnsNames"] == [identity.server_name], "the name callers dial it by"
        assert spec["privateKey"]["algorithm"] == "ECDSA" and spec["privateKey"]["size"] == 256
        assert {"server auth", "client auth"} <= set(spec["usages"]), (
            "a server to some peers, a client to others"
        )
        assert not spec.get("isCA")
        assert spec["issuerRef"]["name"] == "nsfl-ca"


def test_cert_manager_chains_the_coordinator_issuer_and_the_control_plane_to_one_root() -> None:
    objects = production()
    made = certificates()
    issuers = {i["metadata"]["name"]: i["spec"] for i in of_kind(objects, "Issuer")}
    coordinator_issuer = made[ISSUER_SECRET]
    assert coordinator_issuer["isCA"] is True and "uris" not in coordinator_issuer
    assert coordinator_issuer["issuerRef"]["name"] == "nsfl-ca", (
        "an intermediate: the scheduler never holds the root key"
    )
    root_secret = issuers["nsfl-ca"]["ca"]["secretName"]
    assert made[root_secret]["isCA"] is True
    assert "selfSigned" in issuers[made[root_secret]["issuerRef"]["name"]]


def test_with_cert_manager_only_the_store_and_token_secrets_are_made_by_hand() -> None:
    objects = production()
    produced = set(certificates())
    by_hand = {name for workload in of_kind(objects, *WORKLOADS) for _, secret in secret_mounts(workload)
               if (name := secret["secretName"]) not in produced}  # fmt: skip
    assert by_hand == {"nsfl-api-tokens", PKI_SECRET}
    env_secrets = {
        entry["valueFrom"]["secretKeyRef"]["name"]
        for workload in of_kind(objects, *WORKLOADS)
        for container in workload["spec"]["template"]["spec"]["containers"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert env_secrets == {"nsfl-mongodb", "nsfl-s3"}
