"""Bearer tokens, namespaces and roles: who may see and change what."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from api_server.auth import Role, TokenRegistry, hash_token, load_token_file
from libs.errors import InvalidSetting, Unauthenticated
from libs.store import DocumentStore
from tests.unit.api_server.conftest import (
    ADMIN,
    EDITOR_A,
    EDITOR_B,
    VIEWER_A,
    Client,
    Fakes,
    bearer,
    make_settings,
    running_client,
)
from tests.unit.api_server.test_jobs import JOBS, SPEC, put_job, submit


async def test_a_request_without_a_token_is_401_with_a_bearer_challenge(client: Client) -> None:
    response = await client.get(JOBS)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["error"]["code"] == "Unauthenticated"


async def test_an_unknown_token_or_scheme_is_401(client: Client) -> None:
    for header in ("Bearer not-a-known-token-at-all", f"Basic {EDITOR_A}", "Bearer", "Bearer  "):
        response = await client.get(JOBS, headers={"Authorization": header})
        assert response.status == 401, header


async def test_public_endpoints_need_no_token(client: Client) -> None:
    for path in ("/healthz", "/openapi.json", "/metrics"):
        assert (await client.get(path)).status == 200, path


async def test_a_viewer_may_read_but_not_change_anything(client: Client, fakes: Fakes) -> None:
    assert (await client.get(JOBS, headers=bearer(VIEWER_A))).status == 200
    response = await client.post(JOBS, json=SPEC, headers=bearer(VIEWER_A))
    assert response.status == 403
    error = (await response.json())["error"]
    assert error["code"] == "PermissionDenied" and "viewer" in error["message"]
    models = await client.post(
        "/api/v1/namespaces/team-a/models", json={"name": "m", "runtime": "pytorch"}, headers=bearer(VIEWER_A)
    )
    assert models.status == 403
    assert fakes.scheduler.calls == []


async def test_two_namespaces_with_separate_tokens_cannot_see_each_others_jobs(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    await submit(client)  # team-a/mnist
    other = bearer(EDITOR_B)
    for method, path in (
        ("GET", JOBS), ("GET", f"{JOBS}/mnist"), ("PATCH", f"{JOBS}/mnist"), ("DELETE", f"{JOBS}/mnist"),
        ("POST", f"{JOBS}/mnist:stop"), ("GET", f"{JOBS}/mnist/logs"), ("GET", f"{JOBS}/mnist/metrics"),
        ("POST", JOBS), ("GET", "/api/v1/namespaces/team-a/models"),
    ):  # fmt: skip
        response = await client.request(method, path, json={"rounds": 1}, headers=other)
        assert response.status == 404, (method, path)
        error = (await response.json())["error"]
        assert error["code"] == "NotFound" and "mnist" not in error["message"]
    assert await store.try_get("jobs", "team-a/mnist") is not None
    assert [name for name, _ in fakes.scheduler.calls] == ["SubmitJob"]
    own = await (await client.get("/api/v1/namespaces/team-b/jobs", headers=other)).json()
    assert own["jobs"] == []


async def test_a_viewer_of_another_namespace_gets_404_not_403(client: Client) -> None:
    response = await client.post("/api/v1/namespaces/team-b/jobs", json=SPEC, headers=bearer(VIEWER_A))
    assert response.status == 404


async def test_an_admin_token_for_every_namespace_sees_both(client: Client, store: DocumentStore) -> None:
    await put_job(store, "a-job", "QUEUED", namespace="team-a")
    await put_job(store, "b-job", "QUEUED", namespace="team-b")
    for namespace in ("team-a", "team-b"):
        response = await client.get(f"/api/v1/namespaces/{namespace}/jobs", headers=bearer(ADMIN))
        assert len((await response.json())["jobs"]) == 1
    listed = await (await client.get("/api/v1/namespaces", headers=bearer(ADMIN))).json()
    assert (listed["namespaces"], listed["allNamespaces"]) == (["team-a", "team-b"], True)
    own = await (await client.get("/api/v1/namespaces", headers=bearer(EDITOR_B))).json()
    assert own == {"namespaces": ["team-b"], "allNamespaces": False}


async def test_an_admin_sees_every_known_namespace_with_its_jobs_models_and_tokens(
    client: Client, store: DocumentStore
) -> None:
    await put_job(store, "a-job", "QUEUED", namespace="team-a")
    await put_job(store, "c-job", "QUEUED", namespace="team-c")  # known only from its job
    listed = await (await client.get("/api/v1/namespaces", headers=bearer(ADMIN))).json()
    assert listed["namespaces"] == ["team-a", "team-b", "team-c"]  # team-b: known only from the token file
    details = {entry["namespace"]: entry for entry in listed["details"]}
    assert (details["team-a"]["jobs"], details["team-b"]["jobs"], details["team-c"]["jobs"]) == (1, 0, 1)
    assert details["team-a"]["tokens"] == [
        {"name": "editor-a", "role": "editor"}, {"name": "viewer-a", "role": "viewer"},
        {"name": "admin", "role": "admin"},
    ]  # fmt: skip
    assert details["team-c"]["tokens"] == [{"name": "admin", "role": "admin"}]
    assert ADMIN not in await (await client.get("/api/v1/namespaces", headers=bearer(ADMIN))).text()
    own = await (await client.get("/api/v1/namespaces", headers=bearer(EDITOR_A))).json()
    assert "details" not in own


async def test_only_an_admin_over_every_namespace_may_use_platform_wide_endpoints(
    tmp_path: Path, fakes: Fakes
) -> None:
    tokens = tmp_path / "scoped.yaml"
    scoped = "scoped-admin-token-0123456789"
    tokens.write_text(f"tokens: [{{name: scoped, token: {scoped}, namespaces: [team-a], role: admin}}]\n")
    async with running_client(make_settings(tmp_path, fakes, token_file=tokens)) as scoped_client:
        for method, path in (("GET", "/api/v1/enrollment-tokens"), ("POST", "/api/v1/enrollment-tokens"),
                             ("POST", "/api/v1/clients/hospital-a/revoke")):  # fmt: skip
            response = await scoped_client.request(
                method, path, json={"clientId": "x"}, headers=bearer(scoped)
            )
            assert response.status == 403, (method, path)
            assert "every namespace" in (await response.json())["error"]["message"]
        # It is still an admin of its own namespace.
        assert (await scoped_client.get(JOBS, headers=bearer(scoped))).status == 200


def expiring_token_file(path: Path, expires: str) -> Path:
    path.write_text(
        f"tokens: [{{name: contractor, token: {EDITOR_A}, namespaces: [team-a], role: editor, expires: {expires}}}]\n"
    )
    return path


async def test_an_expired_token_is_401_saying_it_expired(tmp_path: Path, fakes: Fakes) -> None:
    expired = expiring_token_file(tmp_path / "expired.yaml", "2020-01-01T00:00:00Z")
    async with running_client(make_settings(tmp_path, fakes, token_file=expired)) as client:
        response = await client.get(JOBS, headers=bearer(EDITOR_A))
        assert response.status == 401
        error = (await response.json())["error"]
        assert error["code"] == "Unauthenticated" and "expired" in error["message"]
        assert "2020-01-01" in error["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_token_works_until_it_expires(tmp_path: Path, fakes: Fakes) -> None:
    later = expiring_token_file(tmp_path / "later.yaml", '"2999-01-01T00:00:00+02:00"')
    async with running_client(make_settings(tmp_path, fakes, token_file=later)) as client:
        assert (await client.get(JOBS, headers=bearer(EDITOR_A))).status == 200
    registry = load_token_file(later)
    caller = registry.lookup(EDITOR_A)
    assert caller is not None and caller.expires_at == dt.datetime(2998, 12, 31, 22, tzinfo=dt.UTC)
    now = caller.expires_at - dt.timedelta(seconds=1)
    ticking = TokenRegistry([(hash_token(EDITOR_A), caller)], clock=lambda: now)
    assert ticking.authenticate(f"Bearer {EDITOR_A}") == caller
    now = caller.expires_at
    with pytest.raises(Unauthenticated, match="expired"):
        ticking.authenticate(f"Bearer {EDITOR_A}")


async def test_a_malformed_namespace_in_the_path_is_400_naming_it(client: Client) -> None:
    response = await client.get("/api/v1/namespaces/Team_A/jobs", headers=bearer(ADMIN))
    assert response.status == 400
    assert "path.ns" in (await response.json())["error"]["message"]


def test_tokens_are_kept_hashed_and_may_be_given_as_hashes(tmp_path: Path) -> None:
    plain = "a-plain-token-of-some-length"
    hashed = "another-token-only-its-hash-is-known"
    path = tmp_path / "tokens.yaml"
    path.write_text(
        "tokens:\n"
        f"  - {{name: one, token: {plain}, namespaces: [ns1], role: viewer}}\n"
        f"  - {{name: two, sha256: {hashlib.sha256(hashed.encode()).hexdigest()}, namespaces: ['*'], role: admin}}\n"
    )
    registry = load_token_file(path)
    assert plain not in repr(vars(registry))
    one, two = registry.lookup(plain), registry.lookup(hashed)
    assert one is not None and one.role is Role.VIEWER and one.sees("ns1") and not one.sees("ns2")
    assert two is not None and two.all_namespaces and two.sees("anything")
    assert registry.lookup("nope-nope-nope-nope") is None
    with pytest.raises(Unauthenticated):
        registry.authenticate("Bearer nope-nope-nope-nope")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{token: short, namespaces: [a], role: viewer}", "at least 16"),
        ("{token: long-enough-token-value, namespaces: [a], role: root}", "'role'"),
        ("{token: long-enough-token-value, namespaces: [], role: viewer}", "'namespaces'"),
        ("{token: long-enough-token-value, namespaces: [Bad_NS], role: viewer}", "DNS-1123"),
        ("{token: long-enough-token-value, namespaces: [a], role: viewer, admin: true}", "unknown keys"),
        ("{namespaces: [a], role: viewer}", "exactly one of 'token' and 'sha256'"),
        ("{token: long-enough-token-value, namespaces: [a], role: viewer, expires: soon}", "RFC 3339"),
        ("{token: long-enough-token-value, namespaces: [a], role: viewer, expires: 2030-01-01}", "RFC 3339"),
        (
            "{token: long-enough-token-value, namespaces: [a], role: viewer, expires: 2030-01-01T00:00:00}",
            "time zone",
        ),
    ],
)
def test_a_bad_token_file_entry_is_refused_naming_it(tmp_path: Path, entry: str, problem: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens:\n  - {entry}\n")
    with pytest.raises(InvalidSetting, match="tokens\\[0\\]") as caught:
        load_token_file(path)
    assert problem in caught.value.message


def test_the_same_token_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    entry = "{token: long-enough-token-value, namespaces: [a], role: viewer}"
    path.write_text(f"tokens:\n  - {entry}\n  - {entry}\n")
    with pytest.raises(InvalidSetting, match="twice"):
        load_token_file(path)
