"""The executor on the wire: it presents its client's certificate, and trusts only the offered job's coordinator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.errors import InvalidSetting
from task_executor import channels
from task_executor.runner import run_task
from task_executor.settings import ExecutorSettings, load
from tests.fixtures.pki import TestPki
from tests.unit.task_executor.fake_coordinator import FakeCoordinator, serve_fake
from tests.unit.task_executor.tasks import linear_weights, read_result, task_json, write_script, write_task

SCRIPT = """
    import nsfl
    nsfl.commit_metrics({"loss": 0.5}, num_samples=3)
"""


@pytest.fixture(params=[("coordinator", "ns", "other"), ("client", "c2")], ids=["another-job", "a-client"])
def impostor(request: pytest.FixtureRequest, test_pki: TestPki) -> Iterator[FakeCoordinator]:
    """An endpoint that serves a certificate of the same CA, but not the coordinator of ns/job."""
    fake = FakeCoordinator()
    server = serve_fake(fake, test_pki, test_pki.identity(*request.param))
    try:
        yield fake
    finally:
        server.stop()
        channels.close_all()


def test_an_offer_naming_an_endpoint_that_is_not_its_jobs_coordinator_is_never_trusted(
    tmp_path: Path, impostor: FakeCoordinator
) -> None:
    sha = impostor.publish(linear_weights())
    script = write_script(tmp_path, SCRIPT)
    task = task_json(script=script, endpoint=impostor.endpoint, model_sha256=sha, kind="evaluate")
    task_dir = write_task(tmp_path / "task", task)

    code = run_task(task_dir, ExecutorSettings(rpc_timeout_seconds=5.0, **impostor.client_wire))

    assert code != 0
    result = read_result(task_dir)
    assert result["state"] == "failed" and result["reason"].startswith("Unavailable"), result
    assert (impostor.callers, impostor.downloads, impostor.uploads) == ([], [], []), "no call got through"


def test_the_executor_settings_come_from_the_variables_the_task_manager_passes(test_pki: TestPki) -> None:
    env = test_pki.env("NSFL_EXECUTOR_", test_pki.identity("client", "c1"))
    settings = load(env)
    assert settings.tls is not None and settings.tls.cert == Path(env["NSFL_EXECUTOR_TLS_CERT"])
    assert channels.wire_of(settings).identity == test_pki.identity("client", "c1")


def test_an_executor_without_tls_refuses_to_start_and_says_how_to_fix_it() -> None:
    with pytest.raises(InvalidSetting, match="mutual TLS is required"):
        load({})


def test_a_plaintext_executor_dials_only_loopback() -> None:
    settings = ExecutorSettings(insecure=True)
    with pytest.raises(InvalidSetting, match="'insecure' is for loopback only"):
        channels.channel_to("coordinator.example.org:443", "ns/job", settings)
