"""The authorisation table exists once in code (``POLICY``) and is shown in docs/security.md: they must agree.

Two promises, each checked from its source of truth:

- the table in docs/security.md lists exactly the RPCs of
  :data:`~libs.wire.authorization.POLICY`, each with the same callers and
  the same resource text, so a reader never trusts a stale page;
- every RPC of every service in the compiled protos (``libs/protos/*_pb2``
  descriptors) has a row, and no row names an RPC that does not exist, so
  an RPC added to a proto without a decision about who may call it fails
  here (the guard would refuse it anyway: no row is fail-closed).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import libs.protos
from libs.wire.authorization import POLICY, ROLES

DOC = Path(__file__).resolve().parents[4] / "docs" / "security.md"
HEADER = ("RPC", "Callers", "On which resources")


def cells(line: str) -> list[str]:
    """The cells of one markdown table row (``| a | b |``), stripped."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def documented_table() -> dict[str, tuple[frozenset[str], str]]:
    """RPC -> (callers, resource) from the authorisation table of docs/security.md."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("|") and tuple(cells(line)) == HEADER]
    table: dict[str, tuple[frozenset[str], str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rpc, callers, resource = cells(line)
        method = rpc.strip("`")
        assert method not in table, f"{method} has two rows in docs/security.md"
        table[method] = (frozenset(re.findall(r"`([^`]+)`", callers)), resource)
    return table


def proto_modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.iter_modules(libs.protos.__path__) if m.name.endswith("_pb2")]
    return [importlib.import_module(f"libs.protos.{name}") for name in sorted(names)]


def proto_methods() -> set[str]:
    """Every RPC of every service the compiled protos define, as gRPC method paths."""
    return {
        f"/{service.full_name}/{method.name}"
        for module in proto_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def expected_row(method: str) -> str:
    rule = POLICY[method]
    return f"| `{method}` | {', '.join(f'`{c}`' for c in sorted(rule.callers))} | {rule.resource} |"


def test_the_security_doc_lists_exactly_the_rpcs_of_the_policy() -> None:
    documented = documented_table()
    missing = [expected_row(method) for method in POLICY if method not in documented]
    stale = sorted(set(documented) - set(POLICY))
    assert missing == [], "docs/security.md lacks these rows:\n" + "\n".join(missing)
    assert stale == [], f"docs/security.md lists RPCs that POLICY does not: {stale}"


def test_the_security_doc_gives_each_rpc_the_callers_and_resource_of_the_policy() -> None:
    documented = documented_table()
    wrong = [
        expected_row(method)
        for method, rule in POLICY.items()
        if method in documented and documented[method] != (rule.callers, rule.resource)
    ]
    assert wrong == [], "docs/security.md differs from POLICY; the rows should read:\n" + "\n".join(wrong)


def test_the_security_doc_names_only_known_roles() -> None:
    for method, (callers, _) in documented_table().items():
        assert callers and callers <= ROLES, method


def test_every_rpc_of_every_compiled_service_has_a_policy_row() -> None:
    methods = proto_methods()
    assert {"ClientSelector", "Coordinator", "JobControl"} <= {
        m.split("/")[1].rsplit(".", 1)[1] for m in methods
    }
    without_row = sorted(methods - set(POLICY))
    assert without_row == [], f"RPCs with no authorisation row in libs/wire/authorization.py: {without_row}"


def test_no_policy_row_names_an_rpc_the_protos_do_not_define() -> None:
    assert sorted(set(POLICY) - proto_methods()) == []
