"""The task executor: runs one federated task on a client, through the ``nsfl`` SDK.

Layers, from the outside in:

- ``runner`` (``run_task``) and ``__main__``: task.json in, download, run,
  upload, result.json out; the only place that does I/O in sequence.
- ``coordinator_client``: the synchronous gRPC calls to the coordinator.
- ``execution``: runs the user's script or functions in this process and
  collects what they committed (no network, used offline by the examples).
- ``sdk`` (imported by scripts as ``nsfl``), ``session`` (one task's SDK
  state) and ``context`` (``TaskContext`` for function mode).
- ``runtimes``: the ``Runtime`` protocol and its PyTorch and TensorFlow
  adapters, the only modules that import a framework, lazily.
- ``task`` (the task.json / result.json shapes), ``settings``, ``errors``.
"""
