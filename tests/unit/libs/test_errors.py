"""The error catalogue: every code is catalogued and maps consistently at every boundary."""

from __future__ import annotations

import grpc

from libs import errors


def _all_error_classes() -> list[type[errors.NsflError]]:
    found: list[type[errors.NsflError]] = []
    stack = [errors.NsflError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def test_every_error_class_names_a_catalogued_code() -> None:
    missing = [cls.__name__ for cls in _all_error_classes() if cls.code not in errors.CATALOGUE]
    assert missing == []


def test_every_catalogue_entry_maps_to_a_real_grpc_status_and_http_error_status() -> None:
    for code, entry in errors.CATALOGUE.items():
        assert hasattr(grpc.StatusCode, entry.grpc_status), code
        assert 400 <= entry.http_status <= 599, code
        assert entry.exit_code > 0, code
        assert entry.public_message, code


def test_every_catalogued_code_has_an_error_class_to_rebuild_it_from_the_wire() -> None:
    for code in errors.CATALOGUE:
        rebuilt = errors.from_wire(code, "boom")
        assert rebuilt.code == code
        assert rebuilt.message == "boom"


def test_error_renders_the_rest_error_shape() -> None:
    err = errors.NotFound("job 'x' not found", details={"name": "x"})
    assert err.to_json() == {"error": {"code": "NotFound", "message": "job 'x' not found", "details": {"name": "x"}}}
    assert err.entry.http_status == 404
