"""Warm versus cold: the time from a launch request to the task's code running, with PyTorch.

The one test of the suite that imports torch (in the warm worker and in the
cold process; never in the test process).  A cold executor starts Python and
imports torch before user code can run; a warm one is forked from a worker
that already has, so a round no longer pays that import.  Run with ``-s`` to
see the numbers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from task_manager.executor_processes import ExecutorProcess, ExitStatus
from task_manager.launcher import WarmWorker, launch_cold
from tests.unit.task_manager.fakes import ENTRIES

pytestmark = [
    pytest.mark.usefixtures("no_leaked_tasks"),
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
]
ENTRY = f"{ENTRIES}:import_torch"


async def latency(launch: Callable[[Path], Awaitable[ExecutorProcess]], folder: Path) -> float:
    """Seconds from the launch request to the entry's first line (after its ``import torch``)."""
    await asyncio.to_thread(folder.mkdir)
    began = time.time()
    process = await launch(folder)
    assert await process.wait() == ExitStatus(exit_code=0), (folder / "executor.log").read_text()
    return float((folder / "entered").read_text()) - began


async def test_a_warm_launch_does_not_pay_the_torch_import_that_a_cold_one_does(tmp_path: Path) -> None:
    worker = WarmWorker("pytorch", preload=["torch"], entry=ENTRY, log_path=tmp_path / "worker.log")
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 120)
        warm = [await latency(worker.launch, tmp_path / f"warm-{i}") for i in range(3)]
    finally:
        await worker.stop()
    cold = await latency(lambda folder: launch_cold(ENTRY, folder), tmp_path / "cold")
    print(
        f"\nlaunch to user code, pytorch: warm {statistics.median(warm) * 1000:.0f} ms "
        f"(runs {', '.join(f'{w * 1000:.0f}' for w in warm)} ms), cold {cold * 1000:.0f} ms; "
        f"the worker's own import of torch took {worker.preload_seconds:.2f}s"
    )
    assert statistics.median(warm) < cold / 4
