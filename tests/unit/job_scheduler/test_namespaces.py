"""The end user's namespaces, as the API server passes them to the scheduler in gRPC metadata."""

from __future__ import annotations

import pytest

from job_scheduler.namespaces import NamespaceScope, parse_namespaces, scope_of
from libs.errors import PermissionDenied, ValidationFailed


def test_a_list_names_exactly_those_namespaces() -> None:
    scope = parse_namespaces(" team-a, team-b ,")
    assert scope == NamespaceScope(frozenset({"team-a", "team-b"}))
    assert scope.allows("team-a") and not scope.allows("team-c") and not scope.everything


def test_a_star_is_every_namespace_and_cannot_be_mixed_with_names() -> None:
    assert parse_namespaces("*").allows("anything") and str(parse_namespaces("*")) == "*"
    with pytest.raises(ValidationFailed, match="either"):
        parse_namespaces("*,team-a")


def test_an_empty_value_is_a_user_with_no_namespace_at_all() -> None:
    scope = parse_namespaces("")
    assert scope.names == frozenset() and not scope.allows("default") and not scope.everything


@pytest.mark.parametrize("value", ["Team-A", "team_a", "a/b", "-x", "x" * 64])
def test_something_that_is_not_a_namespace_name_is_refused(value: str) -> None:
    with pytest.raises(ValidationFailed, match="not a namespace"):
        parse_namespaces(value)


def test_the_scope_comes_from_the_metadata_once_and_a_call_without_it_is_refused() -> None:
    assert scope_of([("x-other", "1"), ("nsfl-namespaces", "team-a")]).names == {"team-a"}
    assert scope_of([("nsfl-namespaces", b"*")]).everything
    with pytest.raises(PermissionDenied, match="pass the user's namespaces in gRPC metadata 'nsfl-namespaces'"):
        scope_of([("x-other", "1")])
    with pytest.raises(PermissionDenied):
        scope_of(None)
    with pytest.raises(ValidationFailed, match="given once"):
        scope_of([("nsfl-namespaces", "team-a"), ("nsfl-namespaces", "*")])
