"""The pure parts: the watch loop, the demo's example pieces and plot, and the demo's verdict."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from libs.errors import DeadlineExceeded, NotFound, Unavailable
from libs.jobspec import validate_spec
from nsfl_ctl import digits_example, pki, plots
from nsfl_ctl.demo import DemoOptions, DemoRun, verdict
from nsfl_ctl.watch import bar_fields, watch_job
from tests.unit.nsfl_ctl.conftest import assert_user_error, invoke


def job(state: str, done: int, rounds: int = 3, **metrics: float) -> dict[str, Any]:
    return {"state": state, "status": {"round": done, "rounds": rounds, "lastMetrics": metrics}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def quiet() -> Console:
    return Console(file=io.StringIO())


def test_watch_rides_out_a_brief_outage_once_the_job_was_seen() -> None:
    replies: list[Any] = [
        job("RUNNING", 1),
        Unavailable("down"),
        job("RUNNING", 2),
        job("FINISHED", 3, accuracy=0.95),
    ]

    def fetch() -> dict[str, Any]:
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return dict(reply)

    clock = Clock()
    final = watch_job(fetch, label="j", console=quiet(), interval=0.5, clock=clock, sleep=clock.sleep)
    assert final["state"] == "FINISHED" and clock.now == 1.5


def test_watch_stops_on_an_error_that_is_not_transient() -> None:
    def fetch() -> dict[str, Any]:
        raise NotFound("job 'j' not found")

    with pytest.raises(NotFound):
        watch_job(fetch, label="j", console=quiet(), sleep=lambda s: None)


def test_watch_gives_up_at_the_deadline() -> None:
    clock = Clock()
    with pytest.raises(DeadlineExceeded, match="still RUNNING"):
        watch_job(lambda: job("RUNNING", 1), label="j", console=quiet(), interval=1, timeout=3, clock=clock,
                  sleep=clock.sleep)  # fmt: skip
    assert clock.now == 3


def test_bar_fields_before_any_status() -> None:
    assert bar_fields({"state": "QUEUED", "spec": {"rounds": 5}}) == {
        "completed": 0, "total": 5, "round": "0/5", "accuracy": "-", "loss": "-", "state": "QUEUED"
    }  # fmt: skip


def test_the_demo_job_is_the_example_with_three_clients_and_validates() -> None:
    spec = digits_example.job_spec(rounds=5, clients=3)
    assert spec["taskEntry"] == digits_example.TASK_ENTRY and spec["datasets"] == ["digits"]
    assert (spec["rounds"], spec["clientsPerRound"], spec["minClients"], spec["evaluateEvery"]) == (
        5,
        3,
        2,
        1,
    )
    assert spec["name"].startswith("digits-demo-")
    validate_spec(spec)


def test_the_example_data_module_is_loaded_by_path_not_by_package_name() -> None:
    module = digits_example.load_data_module()
    assert Path(module.__file__ or "") == digits_example.EXAMPLE_DIR / "data.py"
    assert (
        "examples.pytorch_digits.data" not in sys.modules
        or sys.modules["examples.pytorch_digits.data"] is not module
    )


def test_each_client_gets_a_disjoint_share_and_a_config_with_only_its_own(tmp_path: Path) -> None:
    shares = digits_example.write_shares(tmp_path / "data", 3)
    assert sorted(shares) == ["client-0", "client-1", "client-2"]
    seen: list[bytes] = []
    for client_id, share in shares.items():
        x = np.load(Path(share["path"]) / "train.npz")["x"]
        seen.extend(row.tobytes() for row in x)
        config = digits_example.client_config(client_id, selector_address="127.0.0.1:5", workspace=tmp_path / client_id,
                                              share=share, wire={})  # fmt: skip
        assert config["datasets"]["digits"]["path"] == share["path"]
        assert config["datasets"]["digits"]["samples"] == share["train"] == len(x)
    assert len(seen) > 1000


def test_the_client_config_with_its_certificate_is_accepted_by_the_task_manager(tmp_path: Path) -> None:
    settings = pytest.importorskip("task_manager.settings")
    (tmp_path / "share").mkdir()
    pki.init(tmp_path / "pki")
    wire = pki.client_wire_settings(tmp_path / "pki", "client-0")
    config = digits_example.client_config("client-0", selector_address="127.0.0.1:50051", workspace=tmp_path / "ws",
                                          share={"path": tmp_path / "share", "train": 10}, wire=wire)  # fmt: skip
    path = digits_example.write_client_config(tmp_path / "client.yaml", config)
    loaded = settings.load(path)
    assert loaded.client_id == "client-0" and list(loaded.datasets) == ["digits"]
    assert loaded.tls_cert == tmp_path / "pki" / "issued" / "client-client-0" / "cert.pem"
    assert (loaded.tls_ca, loaded.tls_crl) == (tmp_path / "pki" / "ca.pem", tmp_path / "pki" / "crl.pem")
    assert loaded.trust_domain == "nsfl.local" and not loaded.insecure


def test_round_metrics_keep_evaluated_rounds_in_order_and_plot_to_png(tmp_path: Path) -> None:
    records = [
        {"round": 2, "evaluation": {"accuracy": 0.9, "loss": 0.3}},
        {"round": 1, "evaluation": {"accuracy": 0.8, "loss": 0.6}},
        {"round": 3, "trainMetrics": {"loss": 0.2}},
    ]
    metrics = plots.round_metrics(records)
    assert [(m.round, m.accuracy) for m in metrics] == [(1, 0.8), (2, 0.9)]
    path = plots.plot_accuracy_loss(metrics, tmp_path / "plot.png", title="t")
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("state", "accuracy", "problem"),
    [("FINISHED", 0.95, None), ("FINISHED", 0.85, "below 0.9"), ("FAILED", None, "ended FAILED: boom")],
)
def test_the_demo_succeeds_only_when_finished_above_the_target(state: str, accuracy: float | None,
                                                               problem: str | None) -> None:  # fmt: skip
    run = DemoRun(Path("/tmp/x"), True, job={"state": state, "reason": "boom"}, accuracy=accuracy)
    failure = verdict(run, DemoOptions())
    assert (failure is None) if problem is None else (failure is not None and problem in failure.message)


def test_client_up_with_a_bad_config_is_one_error_line(tmp_path: Path) -> None:
    pytest.importorskip("task_manager.settings")
    config = tmp_path / "client.yaml"
    config.write_text("client_id: c1\nselector_adress: 127.0.0.1:1\n")
    assert_user_error(invoke(("client", "up", "--config", str(config)), {}), 2, "selector_adress")


def a_client_config(tmp_path: Path, wire: dict[str, str], selector: str = "127.0.0.1:1") -> Path:
    (tmp_path / "share").mkdir(exist_ok=True)
    config = digits_example.client_config("c1", selector_address=selector, workspace=tmp_path / "ws",
                                          share={"path": tmp_path / "share", "train": 10}, wire=wire)  # fmt: skip
    return digits_example.write_client_config(tmp_path / "client.yaml", config)


def test_client_up_without_a_certificate_says_how_to_get_one(tmp_path: Path) -> None:
    pytest.importorskip("task_manager.settings")
    config = a_client_config(tmp_path, {}, selector="selector.example.com:50051")
    assert_user_error(invoke(("client", "up", "--config", str(config)), {}), 2, "mutual TLS is required", "pki enroll")


def test_client_up_with_another_clients_certificate_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("task_manager.settings")
    pki.init(tmp_path / "pki")
    config = a_client_config(tmp_path, pki.client_wire_settings(tmp_path / "pki", "someone-else"))
    assert_user_error(invoke(("client", "up", "--config", str(config)), {}), 2, "identifies client 'someone-else'")
