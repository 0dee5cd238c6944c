"""The digits training script, but one chosen client stalls in one chosen round.

Used by fault tests: the stalled executor writes its pid to ``pid_dir`` so the
test can kill it (or let the round deadline pass), then the real training
script runs unchanged.
"""

import os
import runpy
import time
from pathlib import Path

import nsfl

HERE = Path(__file__).resolve()
TRAIN = HERE.parents[3] / "examples" / "pytorch_digits" / "train.py"

if (not nsfl.is_evaluation() and nsfl.client_id() == nsfl.get_parameter("stall_client")
        and nsfl.current_round() == int(nsfl.get_parameter("stall_round", -1))):
    pid_dir = Path(str(nsfl.get_parameter("pid_dir")))
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"{nsfl.client_id()}.pid").write_text(str(os.getpid()))
    time.sleep(float(nsfl.get_parameter("stall_seconds", 600)))

runpy.run_path(str(TRAIN), run_name="__main__")
