"""Reading a job spec from YAML or JSON text.

Only ``yaml.safe_load``-level YAML is accepted (no Python tags), and the
parser is guarded against what makes untrusted YAML dangerous or confusing:

- an alias expansion bigger than :data:`MAX_NODES` values ("billion laughs")
  or a recursive alias is refused *before* the document is built;
- a key given twice in one mapping is an error (PyYAML and ``json`` would
  silently keep the last one, hiding a typo such as two ``rounds:`` lines);
- ``NaN``/``Infinity`` in JSON are refused, as JSON itself does;
- text over :data:`MAX_TEXT_BYTES` is :class:`~libs.errors.PayloadTooLarge`.

Syntax errors become :class:`~libs.errors.ValidationFailed` naming the file,
line and column (1-based).  A ``FederatedJob`` manifest is flattened to a
spec (see ``manifests``).  The result is *not* validated: callers pass it to
``validate_spec``, possibly after merging command-line overrides.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from libs.errors import PayloadTooLarge, ValidationFailed
from libs.jobspec.manifests import is_manifest, manifest_to_spec
from libs.jobspec.messages import json_type_name
from libs.jobspec.validation import MAX_NODES

MAX_TEXT_BYTES = 1024 * 1024
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _SyntaxProblem(Exception):
    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def parse_spec_text(text: str, filename: str = "<input>") -> dict[str, Any]:
    """The spec held by ``text`` (a flat spec or a ``FederatedJob`` manifest, YAML or JSON)."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_TEXT_BYTES:
        raise PayloadTooLarge(f"{filename}: a job spec may be at most {MAX_TEXT_BYTES} bytes, got {size}")
    looks_like_json = filename.endswith(".json") or text.lstrip().startswith(("{", "["))
    try:
        document = _load_json(text) if looks_like_json else _load_yaml(text)
    except _SyntaxProblem as problem:
        raise _syntax_error(filename, problem) from None
    except RecursionError:
        raise _syntax_error(filename, _SyntaxProblem("nested too deeply")) from None
    if document is None:
        raise ValidationFailed(f"{filename}: the file is empty; it must hold a job spec")
    if not isinstance(document, dict):
        raise ValidationFailed(
            f"{filename}: must hold a job spec or a FederatedJob manifest (a mapping), "
            f"got {json_type_name(document)}"
        )
    return manifest_to_spec(document) if is_manifest(document) else document


def _syntax_error(filename: str, problem: _SyntaxProblem) -> ValidationFailed:
    where = filename if problem.line is None else f"{filename}:{problem.line}:{problem.column}"
    entry: dict[str, Any] = {"path": filename, "message": problem.message}
    if problem.line is not None:
        entry.update(line=problem.line, column=problem.column)
    return ValidationFailed(f"{where}: {problem.message}", details={"errors": [entry]})


def _load_json(text: str) -> Any:
    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"duplicate key {key!r}")
            result[key] = value
        return result

    try:
        return json.loads(text, parse_constant=reject_constant, object_pairs_hook=unique_pairs)
    except json.JSONDecodeError as exc:
        raise _SyntaxProblem(exc.msg, exc.lineno, exc.colno) from None
    except ValueError as exc:  # raised by the hooks above, which know no position
        raise _SyntaxProblem(str(exc)) from None


def _load_yaml(text: str) -> Any:
    try:
        loader = yaml.SafeLoader(text)  # checks every character first
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise _SyntaxProblem(
            f"unacceptable character #x{exc.character:04x}: {exc.reason}", line, column
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_problem(exc) from None
    except yaml.YAMLError as exc:
        raise _SyntaxProblem(str(exc)) from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError) -> _SyntaxProblem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem and exc.context_mark is not None:
        message = f"{exc.context} at line {exc.context_mark.line + 1}: {exc.problem}"
    if mark is None:
        return _SyntaxProblem(message)
    return _SyntaxProblem(message, mark.line + 1, mark.column + 1)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_nodes(root: yaml.Node) -> None:
    """Refuse duplicate keys, recursive aliases and expansions over ``MAX_NODES`` values.

    Sizes are counted with aliases expanded (a shared node counts at every
    use) but computed once per node, so the check itself stays linear.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            open_nodes.discard(id(node))
            if sizes[id(node)] > MAX_NODES:
                line = node.start_mark.line + 1
                raise _SyntaxProblem(
                    f"too large once aliases are expanded (at most {MAX_NODES} values)", line, 1
                )
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise _SyntaxProblem(
                "an alias refers to itself", node.start_mark.line + 1, node.start_mark.column + 1
            )
        open_nodes.add(id(node))
        _check_duplicate_keys(node)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _check_duplicate_keys(node: yaml.Node) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        if (key.tag, key.value) in seen:
            mark = key.start_mark
            raise _SyntaxProblem(f"duplicate key {key.value!r}", mark.line + 1, mark.column + 1)
        seen.add((key.tag, key.value))
