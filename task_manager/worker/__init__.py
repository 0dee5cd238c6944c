"""What runs in the task manager's child processes, and the messages both ends of its local channels share.

The task manager (the daemon: ``task_manager.app`` and the modules beside it) starts one warm
worker per runtime, which forks executors; a job executor then serves its job's tasks round after
round.  None of that code runs in the daemon, and the daemon's code never runs in a child: a child
imports only ``libs``, its executor entry (by name, at run time) and this subpackage.

* :mod:`.launch_channel` — the warm worker's command line, environment and the JSON lines on its
  stdin (launch requests) and stdout (ready, started, failed, exited);
* :mod:`.job_channel` — the JSON lines between a job executor and the daemon over a local socket
  (hello, run, finished, stop);
* :mod:`.lines` — the framing both channels share, and :class:`~.lines.MalformedMessage`;
* :mod:`.warm_worker` — the fork server (``python -m task_manager.worker.warm_worker``);
* :mod:`.child` — what a forked (or cold-started) executor does before its entry runs;
* :mod:`.job_executor_loop` — a job executor's loop.

The daemon imports only the three message modules; an import contract (pyproject.toml) keeps it so,
and keeps this subpackage off the daemon's modules.
"""
