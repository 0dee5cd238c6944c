"""The federated job spec: one JSON Schema and the functions around it.

REST validates submissions with it, the CLI reads YAML/JSON files against
it, the scheduler stores what it returns, and the Kubernetes CRD's
``openAPIV3Schema`` is generated from it, so the four never drift
(DESIGN §4, §8).

- :func:`load_schema`: the JSON Schema (draft 2020-12, ``job.schema.json``).
- :func:`validate_spec`: the schema plus the cross-field rules; returns a new
  spec with every default written in, or raises one
  :class:`~libs.errors.ValidationFailed` naming every problem by path.
- :func:`parse_spec_text`: YAML or JSON text (a flat spec or a
  ``FederatedJob`` manifest) to a flat, not yet validated spec.
- :func:`manifest_to_spec` / :func:`spec_to_manifest`: between a flat spec
  and a ``FederatedJob`` object.
- :func:`crd_schema`: the CRD's structural ``openAPIV3Schema``.

When a spec names no initial model (``modelPath``, ``modelRef``,
``checkpointRef``), ``initialModel: client`` is written in: the coordinator
asks one selected client to initialise the model and every client starts
round 1 from those weights.  See ``rules`` for every cross-field rule and
``defaults`` for the defaults that depend on other fields.
"""

from libs.jobspec.crd import crd_schema
from libs.jobspec.manifests import API_VERSION, KIND, manifest_to_spec, spec_to_manifest
from libs.jobspec.parsing import parse_spec_text
from libs.jobspec.schema import load_schema
from libs.jobspec.spec import JobSpec
from libs.jobspec.validation import validate_spec

__all__ = [
    "API_VERSION",
    "KIND",
    "JobSpec",
    "crd_schema",
    "load_schema",
    "manifest_to_spec",
    "parse_spec_text",
    "spec_to_manifest",
    "validate_spec",
]
