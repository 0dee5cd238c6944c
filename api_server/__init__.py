"""nsfl api_server: the one public HTTP entry (DESIGN §2, §6, §9).

REST under ``/api/v1`` for jobs, the model registry and clients, plus
``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json``.  Changes to
jobs go to the job scheduler over gRPC; reads of jobs, rounds and
checkpoints go to the shared document store; clients come from the
selector; model files stream to and from the object store.

The modules, from the edges in:

- ``app`` builds the application (the only place that opens resources),
  ``__main__`` runs it, ``settings`` configures it;
- ``route_table`` (routes with their access rules and OpenAPI facts),
  ``routes/`` (one module per resource), ``openapi`` and ``schemas``
  (the document built from the same table);
- ``auth`` (bearer tokens, namespaces, roles), ``errors`` (the error
  middleware), ``metrics`` (Prometheus text), ``bodies`` and
  ``parameters`` (bounded, checked input);
- logic: ``registry`` (model registry), ``job_views`` (store reads and the
  public job shape), ``spec_references`` (reference checks; PATCH is
  ``libs.jobspec.patching``), ``safetensors_check`` (upload validation);
- adapters: ``scheduler_client``, ``selector_client``, ``upstream``.
"""
