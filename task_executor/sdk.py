"""The ``nsfl`` SDK: the few calls that turn an ordinary training script into a federated one.

A user script does ``import nsfl``: before running it, the runner puts this
module in ``sys.modules["nsfl"]`` (it is also importable as
``task_executor.sdk``).  A script needs four calls::

    import nsfl

    data = np.load(os.path.join(nsfl.get_dataset_path("digits"), "train.npz"))
    model = build_model()
    nsfl.load_weights(model)                 # the round's global model
    if nsfl.is_evaluation():
        nsfl.commit_metrics({"accuracy": evaluate(model)})
    else:
        train(model, data, epochs=nsfl.get_parameter("epochs", 1))
        nsfl.commit_weights(model)           # the executor uploads trained - global
        nsfl.commit_metrics({"loss": last_loss})

The same script serves the three task kinds: ``train`` (commit the trained
model), ``evaluate`` (commit metrics of the global model on held-out data) and
``init`` (a job without an initial model asks one client to create it:
``load_weights`` then captures the model as built, with random generators
seeded from the job id, and quietly ends the script).

Models are ``torch.nn.Module`` or Keras 3 ``keras.Model`` objects, told apart
without importing the framework the script does not use.  Every function here
delegates to the current :class:`~task_executor.session.TaskSession`, so the
SDK itself holds no task state except :data:`cache`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsFloat

from task_executor import client_algorithms as _algorithms
from task_executor import session as _session
from task_executor.client_algorithms import FedProx
from task_executor.errors import NoActiveTask, SdkError, UnknownDataset

__all__ = [
    "NoActiveTask",
    "SdkError",
    "UnknownDataset",
    "cache",
    "client_id",
    "commit_metrics",
    "commit_weights",
    "current_round",
    "fedprox",
    "get_broadcast_file",
    "get_dataset_path",
    "get_parameter",
    "is_evaluation",
    "job_id",
    "load_weights",
    "scaffold",
    "task_kind",
]

cache: dict[str, Any] = _session.CACHE
"""A dict that outlives one task in the same process: keep parsed data here
(``nsfl.cache.setdefault(...)``) so an executor that serves several rounds
reads it once."""


def get_dataset_path(name: str) -> str:
    """The local path of the dataset ``name`` granted to this task.

    Raises :class:`UnknownDataset` (a ``KeyError``) listing the datasets the
    task does have.
    """
    return _session.current().dataset_path(name)


def get_parameter(name: str, default: Any = None) -> Any:
    """The job's parameter ``name`` (from the job spec's ``parameters``), or ``default``."""
    return _session.current().parameter(name, default)


def load_weights(model: Any) -> bool:
    """Load the round's global model into ``model`` (a torch Module or a Keras Model).

    Returns True when weights were loaded.  For an ``init`` task it does not
    return: the model's own initial weights become the task's result and the
    script stops here, so build the model *before* calling it.
    """
    return _session.current().load_weights(model)


def commit_weights(model: Any, num_samples: int | None = None) -> None:
    """Submit ``model``'s trained weights as this client's update.

    ``num_samples`` weighs the update in the average; by default it is the
    sample count the client declared for the task's datasets.  The weights
    are copied now, so training the model further does not change the commit;
    a later call replaces an earlier one.  Ignored (with a warning) in an
    evaluation task.
    """
    _session.current().commit_weights(model, num_samples)


def commit_metrics(metrics: Mapping[str, SupportsFloat], *, num_samples: int | None = None) -> None:
    """Report metrics: at most 64 finite numbers named like ``accuracy`` or ``val/loss``.

    Values may be Python or numpy numbers or one-element tensors.

    Several calls merge (a later value for a name wins).  An evaluation task
    must call it; ``num_samples`` there says how many samples were evaluated.
    """
    _session.current().commit_metrics(metrics, num_samples)


def fedprox(model: Any, mu: float | None = None, *, optimizer: Any = None) -> FedProx:
    """Train with FedProx's proximal term ``(mu/2)||w - w_global||²`` (Li et al. 2020).

    One call after building the model (PyTorch) or after ``model.compile``
    (Keras, whose compiled optimiser it wraps; ``optimizer`` names another
    one); from then on every gradient gains ``mu * (w - w_global)``, whatever
    the loss and the optimiser.  ``mu`` defaults to the job's
    ``aggregation.params.mu``; for a job whose aggregation is not ``fedprox``
    the call does nothing unless ``mu`` is given.  The result's ``penalty()``
    is the current value of the term, for logging.
    """
    algorithm = _algorithms.current()
    if algorithm is None:  # offline (the example simulators): no job settings, nothing to do
        _session.current()
        return FedProx(0.0)
    return algorithm.fedprox(model, mu, optimizer)


def scaffold(model: Any, *, optimizer: Any = None) -> bool:
    """Train with SCAFFOLD's drift correction (Karimireddy et al. 2020); True when it is on.

    One call after building the model (PyTorch) or after ``model.compile``
    (Keras).  Each gradient gains ``c - c_i`` (server and client control
    variates, which the platform keeps) and the gradients are recorded to
    update ``c_i``; the executor sends ``Delta c_i`` with the update.  Does
    nothing (returns False) unless the job's aggregation is ``scaffold``.
    """
    algorithm = _algorithms.current()
    if algorithm is None:
        _session.current()
        return False
    return algorithm.scaffold(model, optimizer)


def get_broadcast_file(name: str) -> bytes:
    """The bytes of file ``name`` that the job's ``broadcast`` extender sent with this round's model."""
    algorithm = _algorithms.current()
    if algorithm is None:
        _session.current()
        raise SdkError(f"no broadcast file {name!r}: no files come with a task run offline")
    return algorithm.broadcast_file(name)


def task_kind() -> str:
    """``"train"``, ``"evaluate"`` or ``"init"``."""
    return _session.current().spec.kind


def is_evaluation() -> bool:
    """Whether this task evaluates the global model instead of training it."""
    return task_kind() == "evaluate"


def current_round() -> int:
    """The federated round this task belongs to."""
    return _session.current().spec.round


def client_id() -> str:
    """This client's id, as its data owner configured it."""
    return _session.current().spec.client_id


def job_id() -> str:
    """The job's id, ``<namespace>/<name>``."""
    return _session.current().spec.job_id
