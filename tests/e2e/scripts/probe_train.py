"""The digits training script, recording first which process runs it (and that process's memory).

Used by the long-lived executor tests.  Every run appends a JSON line
``{"job", "round", "kind", "pid", "rss"}`` to ``<pid_dir>/<client>.jsonl``,
and the job's ``stall_client`` stalls in ``stall_round`` after writing its pid
to ``<pid_dir>/<client>.pid`` (so a test can kill its executor mid-round);
then the real training script runs unchanged.
"""

import json
import os
import runpy
import time
from pathlib import Path

import nsfl

TRAIN = Path(__file__).resolve().parents[3] / "examples" / "pytorch_digits" / "train.py"


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


pid_dir = Path(str(nsfl.get_parameter("pid_dir")))
pid_dir.mkdir(parents=True, exist_ok=True)
with (pid_dir / f"{nsfl.client_id()}.jsonl").open("a") as out:
    record = {"job": nsfl.job_id(), "round": nsfl.current_round(), "kind": nsfl.task_kind(),
              "pid": os.getpid(), "rss": resident_bytes()}
    out.write(json.dumps(record) + "\n")

if (nsfl.task_kind() == "train" and nsfl.client_id() == nsfl.get_parameter("stall_client")
        and nsfl.current_round() == int(nsfl.get_parameter("stall_round", -1))):
    (pid_dir / f"{nsfl.client_id()}.pid").write_text(str(os.getpid()))
    time.sleep(600)

runpy.run_path(str(TRAIN), run_name="__main__")
