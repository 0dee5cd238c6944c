"""The digits training script for the secure-aggregation tests: seeded per task, with a dropout switch.

Seeding: the platform seeds only ``init`` tasks, and a long-lived executor
carries its random state from task to task, so two runs of one job would
shuffle differently.  Comparing a run with secure aggregation against one
without needs the same local training in both, so each task seeds torch from
its client id and round before running the real script.

Dropout: with the job parameters ``drop_client`` and ``drop_round``, that
client, in that round, trains normally and then sets the executor's test-only
switch ``NSFL_TEST_SECAGG_DROP_AFTER=sharing`` (see
``task_executor.secure_aggregation``) in its own process: the executor
SIGKILLs itself once the coordinator has delivered its shares, so the client
is in U2 but never sends its masked input, and the coordinator must unmask the
sum without it.
"""

import os
import runpy
import zlib
from pathlib import Path

import nsfl
import torch

HERE = Path(__file__).resolve()
TRAIN = HERE.parents[3] / "examples" / "pytorch_digits" / "train.py"

torch.manual_seed(zlib.crc32(f"{nsfl.client_id()}:{nsfl.current_round()}".encode()))
runpy.run_path(str(TRAIN), run_name="__main__")

if (not nsfl.is_evaluation() and nsfl.client_id() == nsfl.get_parameter("drop_client")
        and nsfl.current_round() == int(nsfl.get_parameter("drop_round", -1))):
    os.environ["NSFL_TEST_SECAGG_DROP_AFTER"] = "sharing"
