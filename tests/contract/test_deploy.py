"""Contract: deploy/kubernetes renders, validates offline and keeps its security promises (DESIGN §8, §9).

Each overlay is rendered with ``kubectl kustomize`` (offline; CI machines
have kubectl, and without it these tests fail rather than skip) and every
rendered object is checked against the real Kubernetes schemas
(kubernetes-validate).  Beyond the schemas: every workload is non-root with
resources and probes, no committed Secret outside the dev overlay holds a
real value, every Secret and ConfigMap a Pod requires exists with that key
(rendered, or made by hand with the ``kubectl create`` commands of
deploy/README.md: certificates are never committed), and every ``NSFL_*``
variable is a setting its component knows (the settings loader refuses
unknown ones, so a typo here would stop a Pod at start).  Mutual TLS has its
own suite, test_deploy_tls.py.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.jobspec import JobSpec, manifest_to_spec, validate_spec
from libs.k8s import CoordinatorPodSettings, OwnerRef, coordinator_pod
from libs.k8s.coordinator_tls import coordinator_tls_secret_name, with_coordinator_wire
from libs.k8s.crd import CRD_FILE, build_crd, render_crd
from libs.objects.store_urls import parse_s3_url
from tests.unit.libs.k8s.kube_schemas import custom_resource_problems, kubernetes_problems

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod")
WORKLOADS = ("Deployment", "StatefulSet")
EXAMPLE = ROOT / "examples" / "k8s" / "fljob-digits.yaml"
GUIDE = ROOT / "deploy" / "README.md"
PLACEHOLDER = "CHANGE_ME"
RENDER_TIMEOUT_SECONDS = 60


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads ``1e-05`` (how kustomize writes floats, YAML 1.2) as a string; Kubernetes as a number."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize deploy/kubernetes/<path>`` renders (cached per run)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: the deploy tests render the manifests with `kubectl kustomize`")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE / path)],
        capture_output=True, text=True, timeout=RENDER_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{result.stderr[-4000:]}")
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=Yaml12Loader) if doc)


def overlay(name: str) -> tuple[dict[str, Any], ...]:
    return render(f"overlays/{name}")


def of_kind(objects: tuple[dict[str, Any], ...], *kinds: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] in kinds]


def named(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def is_control_plane(workload: dict[str, Any]) -> bool:
    return bool(workload["metadata"]["labels"].get("app.kubernetes.io/name") == "nsfl")


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_overlay_renders_the_whole_control_plane(name: str) -> None:
    objects = overlay(name)
    deployments = {d["metadata"]["name"] for d in of_kind(objects, "Deployment")}
    assert deployments == {"nsfl-api-server", "nsfl-job-scheduler", "nsfl-client-selector"}
    assert named(objects, "Namespace", "nsfl-system")
    crd = named(objects, "CustomResourceDefinition", "federatedjobs.nsfl.io")
    assert crd["spec"] == build_crd()["spec"]


@pytest.mark.parametrize("path", ["overlays/dev", "overlays/prod", "job-namespace"])
def test_every_rendered_object_validates_against_the_kubernetes_schemas(path: str) -> None:
    objects = render(path)
    problems = [problem for obj in objects for problem in kubernetes_problems(obj)]
    assert problems == []


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_namespaced_object_says_its_namespace(name: str) -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    missing = [f"{o['kind']}/{o['metadata']['name']}" for o in overlay(name)
               if o["kind"] not in cluster_scoped and not o["metadata"].get("namespace")]  # fmt: skip
    assert missing == []


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_workload_runs_non_root_read_only_with_resources(name: str) -> None:
    for workload in of_kind(overlay(name), *WORKLOADS):
        pod = workload["spec"]["template"]["spec"]
        where = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["enableServiceLinks"] is False, where
        for container in containers(workload):
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True and security["runAsUser"] > 0, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where}: {bound}"
            assert "livenessProbe" in container and "readinessProbe" in container, where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if is_control_plane(workload):
                assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("name", OVERLAYS)
def test_only_the_scheduler_talks_to_the_kubernetes_api(name: str) -> None:
    for workload in of_kind(overlay(name), *WORKLOADS):
        pod = workload["spec"]["template"]["spec"]
        mounts_token = pod.get("automountServiceAccountToken", True)
        assert mounts_token is (workload["metadata"]["name"] == "nsfl-job-scheduler"), workload["metadata"][
            "name"
        ]


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_scheduler_and_the_selector_are_single_replicas_replaced_with_recreate(name: str) -> None:
    for deployment in ("nsfl-job-scheduler", "nsfl-client-selector"):
        spec = named(overlay(name), "Deployment", deployment)["spec"]
        assert (spec["replicas"], spec["strategy"]["type"]) == (1, "Recreate")


@pytest.mark.parametrize("name", OVERLAYS)
def test_images_are_pinned(name: str) -> None:
    for workload in of_kind(overlay(name), *WORKLOADS):
        for container in containers(workload):
            image = container["image"]
            assert re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", image) and not image.endswith(":latest"), (
                image
            )


def test_no_committed_secret_outside_dev_holds_a_real_value() -> None:
    assert of_kind(overlay("prod"), "Secret") == [], "prod must take its Secrets from outside"
    secrets = [*of_kind(render("base"), "Secret"), *of_kind(render("job-namespace"), "Secret")]
    assert {s["metadata"]["name"] for s in secrets} == {"nsfl-mongodb", "nsfl-s3", "nsfl-api-tokens"}
    for secret in secrets:
        assert "data" not in secret, "placeholders go in stringData, readable as such"
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value, (
                f"{secret['metadata']['name']}.{key} is not a {PLACEHOLDER} placeholder"
            )


def references(pod: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every Secret and ConfigMap a Pod spec requires.

    An ``optional: true`` reference (the revocation list ConfigMap) may be missing: the Pod starts without it.
    """
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for entry in container.get("env", []):
            source = entry.get("valueFrom", {})
            for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if field in source and not source[field].get("optional"):
                    yield kind, source[field]["name"], source[field]["key"]
        for entry in container.get("envFrom", []):
            for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if field in entry and not entry[field].get("optional"):
                    yield kind, entry[field]["name"], None
    for volume in pod.get("volumes", []):
        for field, kind, name_field in (
            ("secret", "Secret", "secretName"),
            ("configMap", "ConfigMap", "name"),
        ):
            source = volume.get(field)
            if source is None or source.get("optional"):
                continue
            for item in source.get("items", [{"key": None}]):
                yield kind, source[name_field], item["key"]


@functools.cache
def made_by_hand() -> tuple[dict[str, Any], ...]:
    """The Secrets and ConfigMaps deploy/README.md has you create (``kubectl -n NS create secret|configmap``).

    Keys only, as objects ``unresolved`` can look up; ``data`` maps each key to the file it is made from
    (``--from-file``) or to its literal value (``--from-literal``).
    """
    made: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in re.sub(r"\\\n\s*", " ", GUIDE.read_text()).splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip().startswith("kubectl ") else []
        if "create" not in words or "-n" not in words:
            continue
        rest = words[words.index("create") + 1 :]
        if rest[:2] == ["secret", "generic"]:
            kind, name, options = "Secret", rest[2], rest[3:]
        elif rest[:1] == ["configmap"]:
            kind, name, options = "ConfigMap", rest[1], rest[2:]
        else:
            continue
        data: dict[str, str] = {}
        for option in options:
            flag, _, value = option.partition("=")
            if flag == "--from-file":
                key, sep, path = value.partition("=")
                data[key if sep else Path(value).name] = path if sep else value
            elif flag == "--from-literal":
                key, _, literal = value.partition("=")
                data[key] = literal
        namespace = words[words.index("-n") + 1]
        made[kind, namespace, name] = {"kind": kind, "metadata": {"name": name, "namespace": namespace},
                                       "data": data}  # fmt: skip
    return tuple(made.values())


def unresolved(pod: dict[str, Any], namespace: str, objects: tuple[dict[str, Any], ...]) -> list[str]:
    index = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    missing = []
    for kind, name, key in references(pod):
        found = index.get((kind, namespace, name))
        keys = {} if found is None else {**found.get("data", {}), **found.get("stringData", {})}
        if found is None or (key is not None and key not in keys):
            missing.append(f"{kind} {namespace}/{name} key {key}")
    return missing


def test_every_secret_and_configmap_a_dev_pod_reads_exists_with_that_key() -> None:
    """Rendered, or made by the guide's commands before `kubectl apply` (the TLS Secrets)."""
    objects = overlay("dev")
    for workload in of_kind(objects, *WORKLOADS):
        pod = workload["spec"]["template"]["spec"]
        where = workload["metadata"]["namespace"]
        assert unresolved(pod, where, objects + made_by_hand()) == [], workload["metadata"]["name"]


def test_the_tls_secrets_exist_only_when_made_by_hand() -> None:
    """No certificate or key is committed: without the guide's commands the dev Pods miss exactly those."""
    objects = overlay("dev")
    missing = {
        entry.split(" key ")[0]
        for workload in of_kind(objects, *WORKLOADS)
        for entry in unresolved(
            workload["spec"]["template"]["spec"], workload["metadata"]["namespace"], objects
        )
    }
    assert missing == {"Secret nsfl-system/nsfl-selector-tls", "Secret nsfl-system/nsfl-scheduler-tls",
                       "Secret nsfl-system/nsfl-api-server-tls", "Secret nsfl-system/nsfl-coordinator-issuer",
                       "Secret nsfl-system/nsfl-api-server-pki"}  # fmt: skip


def test_a_coordinator_pod_in_the_dev_job_namespace_finds_its_secrets() -> None:
    owner = OwnerRef(apiVersion="nsfl.io/v1alpha1", kind="FederatedJob", name="digits-pytorch", uid="u")
    spec = JobSpec.parse(manifest_to_spec(yaml.safe_load(EXAMPLE.read_text())))
    pod = coordinator_pod(spec, owner=owner, image="nsfl/coordinator:0.1.0", settings=CoordinatorPodSettings(),
                          launch=1)  # fmt: skip
    # As the Kubernetes platform launches it: with its certificate's Secret and the optional CRL ConfigMap.
    pod = with_coordinator_wire(pod, environment={}, tls_secret=coordinator_tls_secret_name(spec.name))
    missing = unresolved(dict(pod["spec"]), spec.namespace, overlay("dev"))
    # The launch's ConfigMap, token Secret and certificate Secret are the platform's to create, with the Pod;
    # the revocation list (nsfl-crl) is optional.
    assert sorted(missing) == ["ConfigMap default/nsfl-coord-digits-pytorch-r1 key job.json",
                               "Secret default/nsfl-coord-digits-pytorch-r1 key token",
                               "Secret default/nsfl-coord-digits-pytorch-tls key None"]  # fmt: skip


def test_prod_reads_only_the_secret_keys_the_templates_document() -> None:
    """Templates (base/secrets.yaml) or the guide's `kubectl create secret` commands document every key."""
    documented = {
        (s["metadata"]["name"], key) for s in of_kind(render("base"), "Secret") for key in s["stringData"]
    } | {(s["metadata"]["name"], key) for s in of_kind(made_by_hand(), "Secret") for key in s["data"]}
    for workload in of_kind(overlay("prod"), *WORKLOADS):
        for kind, name, key in references(workload["spec"]["template"]["spec"]):
            if kind == "Secret":
                assert (name, key) in documented, f"{workload['metadata']['name']} reads {name}.{key}"


def component_environment(workload: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The container's environment as Kubernetes would set it: ConfigMaps, Secrets, then $(VAR) expansion."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    namespace = workload["metadata"]["namespace"]
    index = {
        (o["kind"], o["metadata"]["name"]): o for o in objects if o["metadata"].get("namespace") == namespace
    }
    environment: dict[str, str] = {}
    for entry in container.get("envFrom", []):
        environment.update(index["ConfigMap", entry["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            value = index["Secret", source["secretKeyRef"]["name"]]["stringData"][
                source["secretKeyRef"]["key"]
            ]
        elif "configMapKeyRef" in source:
            value = index["ConfigMap", source["configMapKeyRef"]["name"]]["data"][
                source["configMapKeyRef"]["key"]
            ]
        else:
            value = re.sub(r"\$\((\w+)\)", lambda m: environment.get(m.group(1), m.group(0)), entry["value"])
        environment[entry["name"]] = value
    return environment


@pytest.mark.parametrize(
    ("deployment", "module", "prefix"),
    [("nsfl-api-server", "api_server.settings", "NSFL_API_"),
     ("nsfl-client-selector", "client_selector.settings", "NSFL_SELECTOR_"),
     ("nsfl-job-scheduler", "job_scheduler.settings", "NSFL_SCHEDULER_")],
)  # fmt: skip
def test_the_dev_settings_load_in_their_component(deployment: str, module: str, prefix: str) -> None:
    """The settings loader is strict: an unknown or malformed NSFL_* variable stops the Pod at start."""
    settings_module = pytest.importorskip(module)
    if prefix == "NSFL_SCHEDULER_" and "kubernetes" not in settings_module.PLATFORMS:
        pytest.skip("job_scheduler has no 'kubernetes' platform (and its settings) yet")
    objects = overlay("dev")
    environment = component_environment(named(objects, "Deployment", deployment), objects)
    assert all("$(" not in value for value in environment.values()), "an unresolved $(VAR) reference"
    settings = settings_module.load(env={k: v for k, v in environment.items() if k.startswith(prefix)})
    fields = {field.name for field in dataclasses.fields(settings)}
    assert "store_url" in fields and settings.store_url.startswith("mongodb://")
    if "object_store_url" in fields:
        s3 = parse_s3_url(settings.object_store_url, {}, environ=environment)
        assert (s3.bucket, s3.endpoint, s3.create_bucket) == ("nsfl", "nsfl-minio.nsfl-system.svc:9000", True)
        assert s3.access_key and s3.secret_key


def test_the_selector_is_reachable_from_outside_the_cluster() -> None:
    for name, kind in (("dev", "NodePort"), ("prod", "LoadBalancer")):
        service = named(overlay(name), "Service", "nsfl-client-selector-external")
        assert service["spec"]["type"] == kind
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "client-selector"
        assert service["spec"]["ports"][0]["port"] == 50051


def test_prod_runs_two_api_servers_behind_a_disruption_budget_and_network_policies() -> None:
    objects = overlay("prod")
    assert named(objects, "Deployment", "nsfl-api-server")["spec"]["replicas"] == 2
    budget = named(objects, "PodDisruptionBudget", "nsfl-api-server")["spec"]
    assert budget["minAvailable"] == 1
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    assert policies["nsfl-default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    scheduler_sources = policies["nsfl-job-scheduler"]["ingress"][0]["from"]
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "nsfl", "app.kubernetes.io/component": "coordinator"}}} in scheduler_sources  # fmt: skip
    assert not of_kind(objects, "StatefulSet"), "prod uses external MongoDB and S3"


def test_dev_brings_its_own_mongodb_and_minio() -> None:
    images = {c["image"].split(":")[0] for w in of_kind(overlay("dev"), "StatefulSet") for c in containers(w)}
    assert images == {"mongo", "minio/minio"}


def test_rbac_is_least_privilege() -> None:
    objects = render("base")
    roles = {r["metadata"]["name"]: r["rules"] for r in of_kind(objects, "ClusterRole")}
    for name, rules in roles.items():
        for rule in rules:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], name
    operator = {(g, r): set(rule["verbs"]) for rule in roles["nsfl-operator"]
                for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    assert {"get", "list", "watch", "patch"} <= operator["nsfl.io", "federatedjobs"]
    assert "patch" in operator["nsfl.io", "federatedjobs/status"]
    assert operator["nsfl.io", "federatedjobs/finalizers"] == {"update"}
    assert operator["apiextensions.k8s.io", "customresourcedefinitions"] == {"get", "list", "watch"}
    assert ("", "secrets") not in operator and ("", "pods") not in operator
    manager = {r: set(rule["verbs"]) for rule in roles["nsfl-coordinator-manager"] for r in rule["resources"]}
    assert manager["secrets"] == {"create", "delete"}, "never read or list a job namespace's Secrets"
    bindings = of_kind(objects, "ClusterRoleBinding")
    assert [b["roleRef"]["name"] for b in bindings] == ["nsfl-operator"], (
        "coordinator rights only per namespace"
    )
    (binding,) = of_kind(render("job-namespace"), "RoleBinding")
    assert binding["roleRef"]["name"] == "nsfl-coordinator-manager"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nsfl-job-scheduler",
                                    "namespace": "nsfl-system"}]  # fmt: skip


def test_the_example_federated_job_fits_the_crd_and_the_job_schema() -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    installed = yaml.safe_load(CRD_FILE.read_text())
    assert custom_resource_problems(manifest, installed) == []
    spec = validate_spec(manifest_to_spec(manifest))
    assert (spec["name"], spec["runtime"], spec["taskEntry"]) == (
        "digits-pytorch",
        "pytorch",
        "digits-pytorch",
    )


def test_the_committed_crd_is_not_stale() -> None:
    current = CRD_FILE.read_text(encoding="utf-8") if CRD_FILE.exists() else ""
    assert current == render_crd(), (
        f"{CRD_FILE.relative_to(ROOT)} is stale: run `python -m libs.k8s.crd --write` and commit the result"
    )
