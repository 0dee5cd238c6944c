"""No component reads a job-spec key: every one reads the typed JobSpec that libs.jobspec builds.

DESIGN §11: the spec's fields, types and defaults are stated once, in
``libs.jobspec`` (the schema and :class:`~libs.jobspec.JobSpec`).  A component
that reads ``spec["rounds"]`` or ``spec.get("rounds", 0)`` brings back its own
default and its own idea of the type; that is how ``rounds`` once defaulted
to 0 in the scheduler while the schema said 10.  So this test walks the
components' source and fails on any such read.

What counts as a read of a spec key: a subscript ``x["<field>"]`` or a call
``x.get("<field>", ...)``, where ``<field>`` is one of the schema's top-level
properties and ``x`` holds a spec: a name or attribute called ``spec``,
``raw_spec``, ``*_spec`` ..., or the ``"spec"`` entry of a document
(``job["spec"]``, ``data.get("spec")``).  Writing a key (building a spec to
submit) is not a read.  And since a component should never validate a raw
dict into a raw dict either, calling ``validate_spec`` is flagged too: a
component gets its spec from ``JobSpec.parse`` or ``JobSpec.from_document``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from libs.jobspec import load_schema

ROOT = Path(__file__).resolve().parents[4]
COMPONENTS = (
    "api_server",
    "job_scheduler",
    "client_selector",
    "coordinator",
    "task_manager",
    "task_executor",
)
FIELDS = frozenset(load_schema()["properties"])


def _holds_a_spec(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
    elif isinstance(node, ast.Subscript):
        return _constant(node.slice) == "spec"
    elif isinstance(node, ast.Call):
        return _is_get(node) and _constant(node.args[0]) == "spec"
    else:
        return False
    name = name.lstrip("_").lower()
    return name == "spec" or name.endswith("_spec") or name.startswith("spec_")


def _constant(node: ast.expr) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _is_get(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Attribute) and node.func.attr == "get" and bool(node.args)


def spec_key_reads(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for every read of a spec key, and every call of ``validate_spec``, in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = _constant(node.slice)
            if key in FIELDS and _holds_a_spec(node.value):
                yield node.lineno, f"[{key!r}]"
        elif isinstance(node, ast.Call) and _is_get(node):
            key = _constant(node.args[0])
            assert isinstance(node.func, ast.Attribute)
            if key in FIELDS and _holds_a_spec(node.func.value):
                yield node.lineno, f".get({key!r})"
        if isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")
            if name == "validate_spec":
                yield node.lineno, "validate_spec(...)"


def _sources() -> Iterator[Path]:
    for package in COMPONENTS:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_component_reads_a_spec_key_or_validates_a_raw_spec() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _sources()
        for line, what in spec_key_reads(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    ]
    assert not found, "read the spec through libs.jobspec.JobSpec instead:\n" + "\n".join(found)


def test_the_rule_sees_the_reads_it_is_meant_to_see() -> None:
    source = """
spec["rounds"]
self.spec.get("rounds", 0)
job_spec["minClients"]
data["spec"]["maxRetries"]
job.get("spec", {}).get("rounds")
validate_spec(raw)
"""
    assert [line for line, _ in spec_key_reads(ast.parse(source))] == [2, 3, 4, 5, 6, 7]


def test_the_rule_leaves_other_dicts_and_writes_alone() -> None:
    source = """
status["rounds"]
record.get("round")
spec["unknownField"]
spec.rounds
spec["namespace"] = "ns"
job["name"]
"""
    assert list(spec_key_reads(ast.parse(source))) == []
