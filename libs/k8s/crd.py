"""The ``FederatedJob`` CustomResourceDefinition, built from the job schema; and its committed copy.

``python -m libs.k8s.crd --write`` regenerates
``deploy/kubernetes/base/crd-federatedjobs.yaml``; ``--check`` exits 1 when
the committed file differs (a unit test does the same), so the CRD that
``kubectl apply -k`` installs never drifts from the schema REST and the CLI
validate with (DESIGN §4, §8).  Without a flag it prints the YAML.

Choices worth knowing:

- The ``openAPIV3Schema`` is :func:`libs.jobspec.crd_schema` (``spec`` is the
  job schema translated to Kubernetes' structural dialect).  Only
  ``status`` is refined here: its known fields are declared so ``kubectl
  explain fljob.status`` documents them, and it keeps
  ``x-kubernetes-preserve-unknown-fields`` because kopf stores its own
  progress under ``status.kopf`` and the API server would prune it.
- Printer columns read ``.status.roundText`` ("3/10") and
  ``.status.progress`` ("30%"), which :mod:`libs.k8s.status` writes, because
  a column cannot compute ``round/rounds`` itself.
- The rendering is deterministic (fixed key order, no timestamps), so the
  freshness check compares text.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import TypedDict

import yaml

from libs.jobspec import API_VERSION, KIND, crd_schema
from libs.json_values import JsonSchema
from libs.k8s.manifests import KubeObject

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "federatedjobs"
SINGULAR = "federatedjob"
SHORT_NAMES = ["fljob"]
CATEGORIES = ["nsfl"]
CRD_NAME = f"{PLURAL}.{GROUP}"
REPOSITORY = Path(__file__).resolve().parents[2]
CRD_FILE = REPOSITORY / "deploy" / "kubernetes" / "base" / "crd-federatedjobs.yaml"
HEADER = (
    "# Generated from libs/jobspec/job.schema.json by `python -m libs.k8s.crd --write`; do not edit.\n"
    "# A test fails when this copy is stale.\n"
)


class PrinterColumn(TypedDict, total=False):
    """A column ``kubectl get fljobs`` shows (``priority`` 1: only with ``-o wide``)."""

    name: str
    type: str
    jsonPath: str
    priority: int
    description: str


class CrdNames(TypedDict):
    kind: str
    listKind: str
    plural: str
    singular: str
    shortNames: list[str]
    categories: list[str]


class CrdValidation(TypedDict):
    openAPIV3Schema: JsonSchema


class CrdVersion(TypedDict):
    name: str
    served: bool
    storage: bool
    subresources: dict[str, dict[str, str]]  # {"status": {}}
    additionalPrinterColumns: list[PrinterColumn]
    schema: CrdValidation


class CrdSpec(TypedDict):
    group: str
    names: CrdNames
    scope: str
    versions: list[CrdVersion]


class CustomResourceDefinition(KubeObject):
    spec: CrdSpec


PRINTER_COLUMNS: list[PrinterColumn] = [
    {"name": "State", "type": "string", "jsonPath": ".status.state", "description": "The job's state."},
    {"name": "Round", "type": "string", "jsonPath": ".status.roundText", "description": "Rounds done of all."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "Rounds done, in percent."},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1,
     "description": "Why the job is in its state."},
    {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime", "priority": 1,
     "description": "The clients' ML framework."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]  # fmt: skip

_NUMBER_MAP = {"type": "object", "additionalProperties": {"type": "number"}}
STATUS_PROPERTIES: JsonSchema = {
    "state": {"type": "string", "description": "QUEUED, PENDING, STARTING, RUNNING, STOPPING, FINISHED, FAILED, "
                                               "STOPPED or DELETING."},
    "reason": {"type": "string", "description": "Why the job is in its state."},
    "round": {"type": "integer", "description": "The last round completed."},
    "rounds": {"type": "integer", "description": "The rounds the job runs."},
    "roundText": {"type": "string", "description": "round/rounds, for display."},
    "progress": {"type": "string", "description": "Rounds done in percent, for display (\"30%\")."},
    "participants": {"type": "array", "items": {"type": "string"},
                     "description": "Clients whose updates made the last round (at most 100)."},
    "participantCount": {"type": "integer", "description": "How many clients made the last round."},
    "lastMetrics": {**_NUMBER_MAP, "description": "The latest evaluation metrics."},
    "trainMetrics": {**_NUMBER_MAP, "description": "The last round's training metrics."},
    "checkpoints": {
        "type": "array",
        "description": "The latest checkpoints (at most 10).",
        "items": {"type": "object", "properties": {"round": {"type": "integer"}, "key": {"type": "string"},
                                                    "sha256": {"type": "string"}}},
    },
    "finalModel": {"type": "object", "nullable": True, "description": "The trained model in the object store.",
                   "properties": {"key": {"type": "string"}, "sha256": {"type": "string"},
                                  "size": {"type": "integer"}}},
    "coordinator": {"type": "object", "nullable": True, "description": "The job's coordinator.",
                    "properties": {"name": {"type": "string"}, "endpoint": {"type": "string"},
                                   "launches": {"type": "integer"}, "restarts": {"type": "integer"}}},
    "startedAt": {"type": "string", "format": "date-time", "nullable": True},
    "endedAt": {"type": "string", "format": "date-time", "nullable": True},
    "updatedAt": {"type": "string", "format": "date-time", "nullable": True},
    "observedGeneration": {"type": "integer", "description": "The metadata.generation the scheduler runs."},
    "specError": {"type": "object", "nullable": True,
                  "description": "Why the latest spec change does not run (written by the operator).",
                  "properties": {"generation": {"type": "integer", "nullable": True},
                                 "message": {"type": "string"}}},
}  # fmt: skip


def open_api_schema() -> JsonSchema:
    """:func:`~libs.jobspec.crd_schema` with a documented, still open, ``status``."""
    schema = crd_schema()
    status = copy.deepcopy(schema["properties"]["status"])
    status["properties"] = copy.deepcopy(STATUS_PROPERTIES)
    status["x-kubernetes-preserve-unknown-fields"] = True
    schema["properties"]["status"] = status
    return schema


def build_crd() -> CustomResourceDefinition:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of ``federatedjobs.nsfl.io``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "nsfl", "app.kubernetes.io/part-of": "nsfl",
                       "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": list(SHORT_NAMES), "categories": list(CATEGORIES)},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                "schema": {"openAPIV3Schema": open_api_schema()},
            }],
        },
    }  # fmt: skip


def render_crd() -> str:
    """The committed file's text: a header, then the CRD as block YAML in a fixed order."""
    body = yaml.safe_dump(
        build_crd(), sort_keys=False, default_flow_style=False, width=120, allow_unicode=True
    )
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m libs.k8s.crd", description="Render the FederatedJob CRD."
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write {CRD_FILE.relative_to(REPOSITORY)}")
    action.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    parser.add_argument("--output", type=Path, default=CRD_FILE, help="the file --write/--check use")
    args = parser.parse_args(argv)
    text = render_crd()
    if args.write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
        return 0
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"Error: {args.output} is stale; run: python -m libs.k8s.crd --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
