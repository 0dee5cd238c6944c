"""Names for JSON whose shape no type states, so a signature says which kind of loose JSON it takes.

Most JSON in nsfl has a type: the job spec is :class:`libs.jobspec.JobSpec`,
the stored documents are the ``TypedDict``\\ s of :mod:`libs.records`, the
task and control messages are protobuf.  What is left is JSON whose shape is
open by design, and a bare ``dict[str, Any]`` would not tell a reader which
of these it is:

- :data:`JsonObject`: a JSON object not (yet) checked against a schema: a
  user's body at the REST edge before validation, a section the user or an
  algorithm fills freely (a job's ``parameters``, an extender's metrics);
- :data:`JsonSchema`: a JSON Schema or an OpenAPI fragment: its shape is the
  JSON Schema vocabulary itself, checked by ``jsonschema``, not by mypy.

Use a precise type instead as soon as the shape is known.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonObject: TypeAlias = dict[str, Any]
"""A JSON object whose keys and values are not checked yet (or are free-form by design)."""

JsonSchema: TypeAlias = dict[str, Any]
"""A JSON Schema (draft 2020-12) or an OpenAPI 3.1 fragment built from schemas."""
