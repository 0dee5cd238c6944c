"""JSON Schemas of the REST bodies: published in ``/openapi.json`` and used to check requests.

The small request bodies (start, register-model, create-model) are checked
against exactly the schemas published here, so the document and the server
cannot disagree about what is accepted.  The job spec is the job JSON
Schema from ``libs.jobspec`` (DESIGN §4): its ``$defs`` move to
``components/schemas`` as ``JobSpec.<name>`` and its references are
rewritten to point there; ``$id`` is dropped because it would make every
reference resolve against the job schema's own URL.
"""

from __future__ import annotations

from typing import Any

from api_server.job_views import STATES
from api_server.parameters import MODEL_NAME
from api_server.pki_schemas import pki_schemas
from api_server.registry import RUNTIMES
from libs.jobspec import load_schema
from libs.json_values import JsonSchema


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


DESCRIPTION: JsonSchema = {"type": "string", "maxLength": 4096}
TIMESTAMP: JsonSchema = {"type": ["number", "string", "null"], "description": "Seconds since the epoch."}

START_BODY: JsonSchema = {
    "type": "object",
    "description": "How to start a job again; an empty body starts from the latest checkpoint.",
    "properties": {
        "fromScratch": {
            "type": "boolean",
            "description": "Start from the initial model instead of the latest checkpoint.",
            "default": False,
        }
    },
    "additionalProperties": False,
}

REGISTER_MODEL_BODY: JsonSchema = {
    "type": "object",
    "description": "Register the final model of a FINISHED job as a new version of a registry model "
    "(created, with the job's runtime, if it does not exist).",
    "properties": {"model": MODEL_NAME, "description": DESCRIPTION},
    "required": ["model"],
    "additionalProperties": False,
}

CREATE_MODEL_BODY: JsonSchema = {
    "type": "object",
    "properties": {
        "name": MODEL_NAME,
        "runtime": {"type": "string", "enum": list(RUNTIMES)},
        "description": DESCRIPTION,
    },
    "required": ["name", "runtime"],
    "additionalProperties": False,
}

JOB_PATCH_BODY: JsonSchema = {
    "type": "object",
    "description": "A JSON merge patch (RFC 7386) over the job's spec: given fields replace the stored "
    "ones, null removes one. The result is validated like a new job.",
}


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v) for k, v in node.items() if k not in ("$id", "$schema")}
        target = out.get("$ref")
        if isinstance(target, str) and target.startswith("#/$defs/"):
            out["$ref"] = "#/components/schemas/JobSpec." + target[len("#/$defs/") :]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def job_spec_schemas() -> JsonSchema:
    schema = load_schema()
    defs = schema.pop("$defs", {})
    out: JsonSchema = {"JobSpec": _rewrite_refs(schema)}
    for name, definition in defs.items():
        out[f"JobSpec.{name}"] = _rewrite_refs(definition)
    return out


def _object(properties: JsonSchema, required: list[str] | None = None) -> JsonSchema:
    schema: JsonSchema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


VERSION_VIEW = _object(
    {
        "version": {"type": "integer", "minimum": 1},
        "sha256": {"type": "string"},
        "size": {"type": "integer"},
        "createdAt": TIMESTAMP,
        "description": {"type": "string"},
        "lineage": {
            "type": ["object", "null"],
            "properties": {
                "job": {"type": "string"},
                "round": {"type": ["integer", "null"]},
                "clients": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    ["version", "sha256", "size"],
)


def component_schemas() -> JsonSchema:
    schemas: JsonSchema = {
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                    ["code", "message", "details"],
                )
            },
            ["error"],
        ),
        "Job": _object(
            {
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "state": {"type": "string", "enum": list(STATES)},
                "reason": {"type": ["string", "null"]},
                "priority": {"type": ["integer", "null"]},
                "createdAt": TIMESTAMP,
                "updatedAt": TIMESTAMP,
                "startedAt": TIMESTAMP,
                "endedAt": TIMESTAMP,
                "spec": ref("JobSpec"),
                "status": {"type": ["object", "null"]},
                "transitions": {"type": ["array", "null"]},
                "coordinator": {"type": ["object", "null"]},
                "version": {"type": "integer", "description": "Store version; changes on every update."},
            },
            ["namespace", "name"],
        ),
        "JobList": _object(
            {"jobs": {"type": "array", "items": ref("Job")}, "nextPageToken": {"type": ["string", "null"]}},
            ["jobs", "nextPageToken"],
        ),
        "RoundList": _object(
            {"job": {"type": "string"}, "rounds": {"type": "array", "items": {"type": "object"}}},
            ["job", "rounds"],
        ),
        "CheckpointList": _object(
            {
                "job": {"type": "string"},
                "checkpoints": {
                    "type": "array",
                    "items": _object(
                        {
                            "round": {"type": "integer"},
                            "sha256": {"type": "string"},
                            "size": {"type": "integer"},
                            "createdAt": TIMESTAMP,
                        }
                    ),
                },
            },
            ["job", "checkpoints"],
        ),
        "StartRequest": START_BODY,
        "RegisterModelRequest": REGISTER_MODEL_BODY,
        "CreateModelRequest": CREATE_MODEL_BODY,
        "JobPatch": JOB_PATCH_BODY,
        "ModelVersion": VERSION_VIEW,
        "RegisteredVersion": {
            **VERSION_VIEW,
            "properties": {**VERSION_VIEW["properties"], "model": {"type": "string"}},
        },
        "Model": _object(
            {
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "runtime": {"type": "string", "enum": list(RUNTIMES)},
                "description": {"type": "string"},
                "latest": {"type": ["integer", "null"]},
                "createdAt": TIMESTAMP,
                "updatedAt": TIMESTAMP,
                "versions": {"type": "array", "items": ref("ModelVersion")},
            },
            ["namespace", "name", "runtime", "versions"],
        ),
        "ModelList": _object(
            {
                "models": {"type": "array", "items": ref("Model")},
                "nextPageToken": {"type": ["string", "null"]},
            },
            ["models", "nextPageToken"],
        ),
        "VersionList": _object(
            {"model": {"type": "string"}, "versions": {"type": "array", "items": ref("ModelVersion")}},
            ["model", "versions"],
        ),
        "Client": _object(
            {
                "clientId": {"type": "string"},
                "liveness": {"type": "string", "enum": ["alive", "lost", "unknown"]},
                "lastHeartbeat": {"type": ["number", "null"]},
                "runningTasks": {"type": "integer"},
                "reservedBy": {"type": ["string", "null"]},
                "source": {
                    "type": ["string", "null"],
                    "description": "The peer host it last registered from.",
                },
                "expiresAt": {
                    "type": ["number", "null"],
                    "description": "Seconds since the epoch when its registry entry expires if it stays away.",
                },
                "runtimes": {"type": "array", "items": {"type": "string"}},
                "datasets": {"type": "array", "items": {"type": "object"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "resources": {"type": "object"},
            },
            ["clientId", "liveness"],
        ),
        "ClientList": _object({"clients": {"type": "array", "items": ref("Client")}}, ["clients"]),
        "NamespaceList": _object(
            {
                "namespaces": {"type": "array", "items": {"type": "string"}},
                "allNamespaces": {"type": "boolean", "description": "The token sees every namespace."},
                "details": {
                    "type": "array",
                    "description": "Only for an admin over every namespace.",
                    "items": _object(
                        {
                            "namespace": {"type": "string"},
                            "jobs": {"type": "integer"},
                            "models": {"type": "integer"},
                            "tokens": {
                                "type": "array",
                                "description": "The tokens that reach it (by name; never the token).",
                                "items": _object({"name": {"type": "string"}, "role": {"type": "string"}}),
                            },
                        },
                        ["namespace", "jobs", "models", "tokens"],
                    ),
                },
            },
            ["namespaces", "allNamespaces"],
        ),
        "Health": _object(
            {
                "status": {"type": "string"},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            ["status"],
        ),
    }
    schemas.update(pki_schemas())
    schemas.update(job_spec_schemas())
    return schemas
