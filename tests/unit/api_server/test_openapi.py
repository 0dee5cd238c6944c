"""``/openapi.json`` documents exactly the routes the server has, and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import re
from pathlib import Path

import schemathesis

from api_server.app import make_app
from api_server.auth import TokenRegistry
from api_server.settings import ApiSettings
from api_server.state import OPENAPI
from libs.jobspec import load_schema
from tests.unit.api_server.conftest import Client


def routed_operations(settings: ApiSettings) -> set[tuple[str, str]]:
    app = make_app(settings, tokens=TokenRegistry([]))
    found = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        found.add((route.method.lower(), re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", canonical)))
    return found


def test_every_route_is_documented_and_every_documented_operation_is_routed(tmp_path: Path) -> None:
    settings = ApiSettings(token_file=tmp_path / "unused.yaml", state_dir=tmp_path)
    document = make_app(settings, tokens=TokenRegistry([]))[OPENAPI]
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == routed_operations(settings)
    assert len(documented) >= 25


async def test_the_served_document_is_valid_openapi_31(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()


async def test_the_job_spec_schema_is_the_libs_job_schema(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert set(schemas["JobSpec"]["properties"]) == set(load_schema()["properties"])
    assert schemas["JobSpec"]["properties"]["name"]["$ref"] == "#/components/schemas/JobSpec.dnsLabel"
    create = document["paths"]["/api/v1/namespaces/{ns}/jobs"]["post"]
    assert (
        create["requestBody"]["content"]["application/yaml"]["schema"]["$ref"]
        == "#/components/schemas/JobSpec"
    )
    assert {"400", "401", "403", "404", "413", "503"} <= set(create["responses"])


# Public, though under /api: the enrolment token in the body is the credential (a task manager
# enrolling has no bearer token), and an unknown one is 401.
TOKEN_IN_BODY = {("post", "/api/v1/enroll")}


async def test_authenticated_operations_declare_bearer_security_and_public_ones_none(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            public = not path.startswith("/api/") or (method, path) in TOKEN_IN_BODY
            assert operation["security"] == ([] if public else [{"bearerAuth": []}]), (method, path)
            assert ("401" in operation["responses"]) is (not public or (method, path) in TOKEN_IN_BODY)


async def test_the_enrolment_routes_declare_their_bodies_replies_and_errors(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    expected = {
        ("post", "/api/v1/enrollment-tokens"): (
            "201",
            "CreateEnrollmentTokenRequest",
            {"400", "401", "403", "503"},
        ),
        ("get", "/api/v1/enrollment-tokens"): ("200", None, {"401", "403", "503"}),
        ("post", "/api/v1/enroll"): ("201", "EnrollRequest", {"400", "401", "403", "413", "503"}),
        ("post", "/api/v1/clients/{clientId}/revoke"): (
            "200",
            "RevokeClientRequest",
            {"400", "403", "404", "503"},
        ),
    }
    for (method, path), (success, body, errors) in expected.items():
        operation = document["paths"][path][method]
        assert "$ref" in operation["responses"][success]["content"]["application/json"]["schema"]
        assert errors <= set(operation["responses"]), (method, path)
        for status in errors:
            assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
        if body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{body}"}
