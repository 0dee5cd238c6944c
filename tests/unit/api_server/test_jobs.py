"""Jobs over REST: create, list, get, update, delete, start/stop and the job's outputs."""

from __future__ import annotations

import time
from typing import Any

from api_server.auth import Caller, Role
from api_server.scheduler_client import namespaces_metadata
from libs.store import DocumentStore
from tests.unit.api_server.conftest import ADMIN, EDITOR_A, VIEWER_A, Client, Fakes, bearer
from tests.unit.api_server.fakes import COORDINATOR_SECRET, job_document

JOBS = "/api/v1/namespaces/team-a/jobs"
SPEC: dict[str, Any] = {"name": "mnist", "runtime": "pytorch", "taskEntry": "mnist-train", "rounds": 3}


async def submit(client: Client, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await client.post(JOBS, json=spec or SPEC, headers=bearer(EDITOR_A))
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def put_job(
    store: DocumentStore, name: str, state: str, namespace: str = "team-a", **extra: Any
) -> None:
    spec = {**SPEC, "name": name, "namespace": namespace}
    await store.upsert("jobs", f"{namespace}/{name}", {**job_document(namespace, spec, state=state), **extra})


async def test_a_submitted_json_spec_is_validated_defaulted_and_forwarded(
    client: Client, fakes: Fakes
) -> None:
    response = await client.post(JOBS, json=SPEC, headers=bearer(EDITOR_A))
    assert response.status == 201
    assert response.headers["Location"] == f"{JOBS}/mnist"
    job = await response.json()
    assert job["state"] == "QUEUED"
    assert job["spec"]["namespace"] == "team-a"
    assert job["spec"]["clientsPerRound"] == 2  # a default, written in
    assert job["version"] == 1
    ((call, request),) = fakes.scheduler.calls
    assert call == "SubmitJob" and request.namespace == "team-a"


async def test_a_yaml_federated_job_manifest_is_accepted(client: Client) -> None:
    manifest = (
        "apiVersion: nsfl.io/v1alpha1\nkind: FederatedJob\n"
        "metadata: {name: from-yaml, namespace: team-a}\n"
        "spec: {runtime: tensorflow, taskEntry: keras-train}\n"
    )
    response = await client.post(
        JOBS, data=manifest, headers={**bearer(EDITOR_A), "Content-Type": "application/yaml"}
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["spec"]["runtime"] == "tensorflow"


async def test_a_spec_for_another_namespace_than_the_path_is_refused(client: Client, fakes: Fakes) -> None:
    response = await client.post(JOBS, json={**SPEC, "namespace": "team-b"}, headers=bearer(EDITOR_A))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["message"].startswith("spec.namespace:")
    assert fakes.scheduler.calls == []


async def test_a_job_is_read_back_without_secrets(client: Client) -> None:
    await submit(client)
    response = await client.get(f"{JOBS}/mnist", headers=bearer(VIEWER_A))
    assert response.status == 200
    text = await response.text()
    assert COORDINATOR_SECRET not in text
    job = await response.json()
    assert job["name"] == "mnist" and "token" not in job["coordinator"]


async def test_a_missing_job_is_404(client: Client) -> None:
    response = await client.get(f"{JOBS}/nope", headers=bearer(VIEWER_A))
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "NotFound"


async def test_jobs_are_listed_a_page_at_a_time_and_filtered_by_state(
    client: Client, store: DocumentStore
) -> None:
    for index, state in enumerate(["QUEUED", "RUNNING", "RUNNING", "FINISHED", "RUNNING"]):
        await put_job(store, f"job-{index}", state)
    await put_job(store, "elsewhere", "RUNNING", namespace="team-b")
    seen: list[str] = []
    token = None
    while True:
        query = {"state": "RUNNING", "limit": "2", **({"pageToken": token} if token else {})}
        response = await client.get(JOBS, params=query, headers=bearer(VIEWER_A))
        assert response.status == 200
        page = await response.json()
        assert len(page["jobs"]) <= 2
        seen += [job["name"] for job in page["jobs"]]
        token = page["nextPageToken"]
        if token is None:
            break
    assert seen == ["job-1", "job-2", "job-4"]
    both = await (
        await client.get(JOBS, params={"state": "queued,finished"}, headers=bearer(VIEWER_A))
    ).json()
    assert [job["name"] for job in both["jobs"]] == ["job-0", "job-3"]


async def test_bad_list_parameters_are_400_naming_the_parameter(client: Client) -> None:
    for query, name in (
        ({"state": "SLEEPING"}, "query.state"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "x"}, "query.limit"),
        ({"pageToken": "!!"}, "query.pageToken"),
    ):
        response = await client.get(JOBS, params=query, headers=bearer(VIEWER_A))
        assert response.status == 400, query
        assert name in (await response.json())["error"]["message"]


async def test_a_patch_changes_the_spec_through_the_scheduler_with_the_current_version(
    client: Client, fakes: Fakes
) -> None:
    await submit(client)
    response = await client.patch(
        f"{JOBS}/mnist", json={"rounds": 7, "clientsPerRound": 1}, headers=bearer(EDITOR_A)
    )
    assert response.status == 200, await response.text()
    job = await response.json()
    assert job["spec"]["rounds"] == 7
    assert job["spec"]["minClients"] == 1  # the derived default followed clientsPerRound
    name, request = fakes.scheduler.calls[-1]
    assert name == "UpdateJob" and request.expected_version == 1


async def test_a_patch_in_a_state_that_forbids_it_is_409(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    await put_job(store, "busy", "RUNNING")
    response = await client.patch(f"{JOBS}/busy", json={"rounds": 7}, headers=bearer(EDITOR_A))
    assert response.status == 409
    error = (await response.json())["error"]
    assert error["code"] == "InvalidState" and "RUNNING" in error["message"]
    assert fakes.scheduler.calls == []


async def test_a_patch_that_breaks_the_spec_is_400_and_changes_nothing(
    client: Client, store: DocumentStore
) -> None:
    await submit(client)
    response = await client.patch(
        f"{JOBS}/mnist", json={"rounds": -1, "name": "other"}, headers=bearer(EDITOR_A)
    )
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert "body.name" in message
    stored = await store.get("jobs", "team-a/mnist")
    assert stored.data["spec"]["rounds"] == 3 and stored.version == 1


async def test_start_and_stop_are_forwarded_to_the_scheduler(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    await put_job(store, "done", "FINISHED")
    started = await client.post(f"{JOBS}/done:start", json={"fromScratch": True}, headers=bearer(EDITOR_A))
    assert started.status == 200, await started.text()
    assert (await started.json())["state"] == "QUEUED"
    name, request = fakes.scheduler.calls[-1]
    assert name == "StartJob" and request.from_scratch is True and request.ref.name == "done"
    stopped = await client.post(f"{JOBS}/done:stop", headers=bearer(EDITOR_A))
    assert stopped.status == 200
    assert (await stopped.json())["state"] == "STOPPED"
    assert fakes.scheduler.calls[-1][0] == "StopJob"


async def test_the_schedulers_refusal_to_start_is_409(client: Client, store: DocumentStore) -> None:
    await put_job(store, "live", "RUNNING")
    response = await client.post(f"{JOBS}/live:start", headers=bearer(EDITOR_A))
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "InvalidState"


async def test_a_start_body_with_a_wrong_type_is_400_naming_the_field(
    client: Client, store: DocumentStore
) -> None:
    await put_job(store, "done", "FINISHED")
    response = await client.post(f"{JOBS}/done:start", json={"fromScratch": "yes"}, headers=bearer(EDITOR_A))
    assert response.status == 400
    assert "body.fromScratch" in (await response.json())["error"]["message"]


async def test_delete_is_forwarded_and_refused_while_running(client: Client, store: DocumentStore) -> None:
    await put_job(store, "old", "FAILED")
    await put_job(store, "live", "RUNNING")
    deleted = await client.delete(f"{JOBS}/old", headers=bearer(EDITOR_A))
    assert deleted.status == 200 and (await deleted.json())["state"] == "DELETING"
    assert await store.try_get("jobs", "team-a/old") is None
    refused = await client.delete(f"{JOBS}/live", headers=bearer(EDITOR_A))
    assert refused.status == 409


async def test_metrics_checkpoints_and_logs_of_a_job(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    await put_job(store, "run", "RUNNING")
    for number in (2, 1, 3):
        await store.upsert("rounds", f"team-a/run#{number:06d}", {
            "namespace": "team-a", "job": "run", "round": number, "accepted": ["c1", "c2"],
            "trainMetrics": {"loss": 1.0 / number}, "evaluation": {"accuracy": 0.5 + number / 10},
        })  # fmt: skip
        await store.upsert("checkpoints", f"team-a/run#{number:06d}", {
            "jobId": "team-a/run", "namespace": "team-a", "job": "run", "round": number,
            "key": f"team-a/checkpoints/run/{number:06d}.safetensors", "sha256": "ab" * 32, "size": 10,
            "createdAt": time.time(),
        })  # fmt: skip
    metrics = await (await client.get(f"{JOBS}/run/metrics", headers=bearer(VIEWER_A))).json()
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    later = await (await client.get(f"{JOBS}/run/metrics?sinceRound=2", headers=bearer(VIEWER_A))).json()
    assert [r["round"] for r in later["rounds"]] == [3]
    checkpoints = await (await client.get(f"{JOBS}/run/checkpoints", headers=bearer(VIEWER_A))).json()
    assert [c["round"] for c in checkpoints["checkpoints"]] == [1, 2, 3]
    assert "key" not in checkpoints["checkpoints"][0]
    logs = await client.get(f"{JOBS}/run/logs?tail=2", headers=bearer(VIEWER_A))
    assert logs.status == 200 and logs.content_type == "text/plain"
    assert await logs.text() == "line 2\nline 3\n"
    assert fakes.scheduler.calls[-1][1].tail_lines == 2


async def test_every_scheduler_call_carries_the_callers_namespaces_from_the_api_servers_identity(
    client: Client, store: DocumentStore, fakes: Fakes
) -> None:
    await submit(client)
    await client.post(f"{JOBS}/mnist:stop", headers=bearer(EDITOR_A))
    await client.get(f"{JOBS}/mnist/logs", headers=bearer(ADMIN))
    await put_job(store, "gone", "FINISHED", namespace="team-b")
    deleted = await client.delete("/api/v1/namespaces/team-b/jobs/gone", headers=bearer(ADMIN))
    assert deleted.status == 200
    api_server = fakes.pki.identity("api-server")
    assert [(f.method, f.namespaces, f.caller) for f in fakes.scheduler.forwarded] == [
        ("SubmitJob", "team-a", api_server),
        ("StopJob", "team-a", api_server),
        ("GetJobLogs", "*", api_server),
        ("DeleteJob", "*", api_server),
    ]


def test_the_namespaces_header_lists_a_tokens_namespaces_sorted_or_a_star() -> None:
    several = Caller("ci", Role.EDITOR, frozenset({"team-b", "team-a"}))
    everyone = Caller("ops", Role.VIEWER, frozenset({"*"}))
    assert namespaces_metadata(several) == (("nsfl-namespaces", "team-a,team-b"),)
    assert namespaces_metadata(everyone) == (("nsfl-namespaces", "*"),)
