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


async def test_authenticated_operations_declare_bearer_security_and_public_ones_none(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            public = not path.startswith("/api/")
            assert operation["security"] == ([] if public else [{"bearerAuth": []}]), (method, path)
            assert ("401" in operation["responses"]) is not public
