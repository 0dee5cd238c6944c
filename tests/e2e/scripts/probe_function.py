"""The digits example in function mode, recording which process runs each call and its memory.

Like ``probe_train.py`` for function mode: each ``train``/``evaluate``/``init``
call appends ``{"job", "round", "kind", "pid", "rss"}`` to
``<pid_dir>/<client>.jsonl`` before calling the example's own function.
"""

import json
import os
import runpy
from pathlib import Path
from typing import Any

EXAMPLE = runpy.run_path(
    str(Path(__file__).resolve().parents[3] / "examples" / "pytorch_digits" / "function.py"), run_name="probed"
)


def _record(ctx: Any) -> None:
    pid_dir = Path(str(ctx.parameter("pid_dir")))
    pid_dir.mkdir(parents=True, exist_ok=True)
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with (pid_dir / f"{ctx.client_id}.jsonl").open("a") as out:
        out.write(json.dumps({"job": ctx.job_id, "round": ctx.round, "kind": ctx.kind, "pid": os.getpid(),
                              "rss": rss}) + "\n")


def init(ctx: Any) -> Any:
    _record(ctx)
    return EXAMPLE["init"](ctx)


def train(ctx: Any) -> Any:
    _record(ctx)
    return EXAMPLE["train"](ctx)


def evaluate(ctx: Any) -> Any:
    _record(ctx)
    return EXAMPLE["evaluate"](ctx)
