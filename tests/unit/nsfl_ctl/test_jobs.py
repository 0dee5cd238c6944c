"""Jobs through the CLI: create from a file, list, show, watch, start, stop, delete, logs, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.unit.nsfl_ctl.conftest import Run, assert_user_error
from tests.unit.nsfl_ctl.fake_api import FakeApi

JOB_YAML = """\
name: digits
runtime: pytorch
taskEntry: digits-pytorch
datasets: [digits]
rounds: 3
clientsPerRound: 2
minClients: 2
"""


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML)
    return path


def test_create_job_sends_the_spec_from_the_file_with_its_namespace(
    run: Run, api: FakeApi, job_file: Path
) -> None:
    result = run("create", "job", "-f", str(job_file), "-n", "team-a")
    assert result.exit_code == 0, result.output
    assert "job team-a/digits created (QUEUED)" in result.output
    assert api.sent("POST") == ["/api/v1/namespaces/team-a/jobs"]
    assert api.bodies == [{**yaml.safe_load(JOB_YAML), "namespace": "team-a"}]


def test_create_job_reads_stdin(run: Run, api: FakeApi) -> None:
    result = run("create", "job", "-f", "-", stdin=JOB_YAML)
    assert result.exit_code == 0, result.output
    assert api.sent("POST") == ["/api/v1/namespaces/default/jobs"]


def test_malformed_yaml_is_named_by_file_and_line_and_nothing_is_sent(
    run: Run, api: FakeApi, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: digits\nrounds: [3\n")
    line = assert_user_error(run("create", "job", "-f", str(bad)), 2, f"{bad}:3")
    assert "expected ',' or ']'" in line
    assert api.requests == []


def test_an_unknown_field_is_named_and_nothing_is_sent(run: Run, api: FakeApi, tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text(JOB_YAML + "roundz: 4\n")
    assert_user_error(run("create", "job", "-f", str(bad)), 2, str(bad), "spec.roundz: unknown field")
    assert api.requests == []


def test_a_namespace_in_the_file_must_agree_with_the_flag(run: Run, api: FakeApi, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML + "namespace: team-b\n")
    assert_user_error(run("create", "job", "-f", str(path), "-n", "team-a"), 2, "team-b", "team-a")
    assert api.requests == []


def test_dry_run_validates_and_prints_defaults_without_sending(
    run: Run, api: FakeApi, job_file: Path
) -> None:
    result = run("create", "job", "-f", str(job_file), "--dry-run")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["name"] == "digits" and "aggregation" in printed
    assert api.requests == []


def test_creating_a_job_twice_is_a_conflict_with_exit_code_4(run: Run, api: FakeApi, job_file: Path) -> None:
    assert run("create", "job", "-f", str(job_file)).exit_code == 0
    assert_user_error(run("create", "job", "-f", str(job_file)), 4, "already exists")


def test_get_jobs_prints_a_table_and_follows_pages(run: Run, api: FakeApi) -> None:
    for index in range(3):
        job = api.add_job(f"job-{index}", state="RUNNING")
        job["status"].update(round=2, lastMetrics={"accuracy": 0.91234, "loss": 0.3})
    result = run("get", "jobs", "--limit", "3")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.strip().splitlines()
    assert header.split()[:4] == ["NAME", "STATE", "ROUND", "ACCURACY"]
    assert [row.split()[:4] for row in rows] == [[f"job-{i}", "RUNNING", "2/5", "0.9123"] for i in range(3)]


def test_get_jobs_pages_through_the_listing(run: Run, api: FakeApi) -> None:
    for index in range(7):
        api.add_job(f"job-{index}")
    result = run("get", "jobs", "-o", "json")
    assert [j["name"] for j in json.loads(result.output)["jobs"]] == [f"job-{i}" for i in range(7)]


def test_get_jobs_as_json_and_yaml_carries_the_whole_documents(run: Run, api: FakeApi) -> None:
    api.add_job("alpha")
    as_json = json.loads(run("get", "jobs", "-o", "json").output)
    as_yaml = yaml.safe_load(run("get", "jobs", "-o", "yaml").output)
    assert as_json == as_yaml
    assert as_json["jobs"][0]["spec"]["runtime"] == "pytorch"


def test_get_jobs_filters_by_state(run: Run, api: FakeApi) -> None:
    api.add_job("a", state="FINISHED")
    api.add_job("b", state="RUNNING")
    result = run("get", "jobs", "--state", "finished", "-o", "json")
    assert [j["name"] for j in json.loads(result.output)["jobs"]] == ["a"]
    assert any("state=FINISHED" in path for path in api.sent("GET"))


def test_an_empty_listing_says_so(run: Run) -> None:
    assert run("get", "jobs").output.strip() == "No resources found."


def test_get_job_shows_its_facts(run: Run, api: FakeApi) -> None:
    api.add_job("alpha", state="RUNNING")["status"].update(
        round=3, lastMetrics={"accuracy": 0.93, "loss": 0.2}
    )
    result = run("get", "job", "alpha")
    assert result.exit_code == 0, result.output
    assert "default/alpha" in result.output and "3/5" in result.output and "0.9300" in result.output


def test_a_missing_job_is_not_found_with_exit_code_3(run: Run) -> None:
    assert_user_error(run("get", "job", "nope"), 3, "job 'nope' not found")


def test_get_job_watch_follows_the_job_until_it_finishes(run: Run, api: FakeApi) -> None:
    api.add_job("alpha", rounds=4)
    api.progressing.add(("default", "alpha"))
    result = run("get", "job", "alpha", "-w", "--interval", "0.01")
    assert result.exit_code == 0, result.output
    assert api.jobs[("default", "alpha")]["state"] == "FINISHED"
    assert len(api.sent("GET")) == 4
    assert "job default/alpha FINISHED: round 4/4, accuracy 0.8600, loss 0.2500" in result.output
    assert "round 4/4" in result.stderr and "FINISHED" in result.stderr  # the bar, on stderr when piped


def test_get_job_watch_fails_when_the_job_fails(run: Run, api: FakeApi) -> None:
    api.add_job("alpha", rounds=2)
    api.progressing.add(("default", "alpha"))
    api.final_state = "FAILED"
    result = run("get", "job", "alpha", "-w", "--interval", "0.01")
    assert_user_error(result, 1, "ended FAILED", "coordinator said so")


def test_get_job_watch_gives_up_at_its_timeout(run: Run, api: FakeApi) -> None:
    api.add_job("alpha", state="RUNNING")
    result = run("get", "job", "alpha", "-w", "--interval", "0.01", "--timeout", "0.1")
    assert_user_error(result, 6, "gave up watching default/alpha", "still RUNNING")


def test_create_job_with_watch_submits_then_watches(run: Run, api: FakeApi, job_file: Path) -> None:
    api.progressing.add(("default", "digits"))
    result = run("create", "job", "-f", str(job_file), "-w", "--interval", "0.01")
    assert result.exit_code == 0, result.output
    assert "job default/digits FINISHED: round 3/3" in result.output


def test_start_stop_and_delete_a_job(run: Run, api: FakeApi) -> None:
    api.add_job("alpha", state="FINISHED")
    started = run("start", "job", "alpha", "--from-scratch")
    assert started.exit_code == 0 and "job default/alpha started (QUEUED)" in started.output
    assert api.bodies == [{"fromScratch": True}]
    stopped = run("stop", "job", "alpha", "-o", "json")
    assert json.loads(stopped.output)["state"] == "STOPPING"
    api.jobs[("default", "alpha")]["state"] = "STOPPED"
    deleted = run("delete", "job", "alpha")
    assert deleted.exit_code == 0 and "deleted" in deleted.output
    assert ("default", "alpha") not in api.jobs
    assert [m for m, _ in api.requests] == ["POST", "POST", "DELETE"]


def test_deleting_a_running_job_is_refused_with_exit_code_4(run: Run, api: FakeApi) -> None:
    api.add_job("alpha", state="RUNNING")
    assert_user_error(run("delete", "job", "alpha"), 4, "stop it first")


def test_logs_prints_the_coordinator_log_tail(run: Run, api: FakeApi) -> None:
    api.add_job("alpha")
    result = run("logs", "job", "alpha", "--tail", "2")
    assert result.exit_code == 0
    assert result.output == "round 9 closed\nround 10 closed\n"
    assert api.sent("GET") == ["/api/v1/namespaces/default/jobs/alpha/logs?tail=2"]


def test_get_metrics_shows_one_row_per_round(run: Run, api: FakeApi) -> None:
    api.add_job("alpha")
    result = run("get", "metrics", "alpha")
    assert result.exit_code == 0, result.output
    rows = result.output.strip().splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    assert rows[2].split()[-2:] == ["0.8300", "0.1667"]


def test_get_job_watch_with_json_prints_only_the_final_job_on_stdout(run: Run, api: FakeApi) -> None:
    api.add_job("alpha", rounds=2)
    api.progressing.add(("default", "alpha"))
    result = run("get", "job", "alpha", "-w", "--interval", "0.01", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"] == "FINISHED"
