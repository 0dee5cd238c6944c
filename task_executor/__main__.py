"""``python -m task_executor <task_dir>``: run one task in a fresh process.

The task manager normally calls :func:`~task_executor.runner.run_task` in a
process forked from its warm worker; this entry is the same run for the cold
path (no warm worker for the runtime) and for debugging a task directory by
hand.  The exit code is ``run_task``'s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from libs.structured_logging import configure_logging
from task_executor.runner import run_task

USAGE = "usage: python -m task_executor <task_dir>"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    configure_logging(
        os.environ.get("NSFL_LOG_LEVEL", "INFO"),
        json_output=os.environ.get("NSFL_LOG_JSON", "") == "1",
        component="task_executor",
    )
    return run_task(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
