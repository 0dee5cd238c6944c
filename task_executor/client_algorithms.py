"""The client's side of the job's algorithm: FedProx, SCAFFOLD, local DP and broadcast files.

The coordinator tells each task what its algorithm needs from the client in
the task's typed settings (:class:`~libs.tasks.spec.AlgorithmSettings`, beside
the job's own parameters, never among them), and may attach tensors to the
global model it serves (:mod:`libs.aggregation.attachments`: SCAFFOLD's server control variate ``c``, broadcast files).
The runner builds one :class:`ClientRound` per task from both, makes it
*current* while the user's code runs (:meth:`ClientRound.active`), and lets
it shape the upload afterwards (:meth:`ClientRound.finish`).

What a training script does, with one SDK call each (both are no-ops when the
job's aggregation does not use them, so one script serves every job)::

    model = build_model()
    nsfl.load_weights(model)
    nsfl.fedprox(model)     # FedProx: adds mu * (w - w_global) to every gradient
    nsfl.scaffold(model)    # SCAFFOLD: adds c - c_i to every gradient, records the gradients
    train(model)            # the script's own loop or model.fit(...)
    nsfl.commit_weights(model)

For Keras, call them after ``model.compile(...)`` (they wrap the compiled
optimiser); for PyTorch anywhere before training (they hook the parameters).
A job whose aggregation is ``fedprox`` or ``scaffold`` fails the task with a
clear reason if the script did not make the call: silently training plain
FedAvg would not be what the job asked for.

FedProx (Li et al. 2020): the local objective gains ``(mu/2)||w - w_global||²``,
so every gradient gains ``mu (w - w_global)``; ``mu`` comes from the job's
``aggregation.params.mu`` unless the script passes one.

SCAFFOLD (Karimireddy et al. 2020, Algorithm 1, option II).  Each local step
uses ``g - c_i + c``.  The new client variate of option II is
``c_i+ = c_i - c + (x - y_i) / (K eta_l)``; for plain SGD ``(x - y_i) / (K eta_l)``
is exactly the mean of the corrected gradients over the K steps, so ``c_i+``
is the mean of the *raw* gradients the round used.  That is what is
computed here, from the recorded gradients: it needs no learning rate, and it
stays the quantity option II estimates when the script's optimiser has
momentum or adapts its steps (where ``(x - y_i) / (K eta_l)`` would be off by
the optimiser's own scaling).  The upload carries ``Delta c_i = c_i+ - c_i``
beside the model delta; ``c_i+`` is kept in the job's state folder on this
client (``task.json`` ``state_dir``, never a shared temporary path) and
written only once the coordinator accepted the update, so a rejected upload
leaves ``c_i`` as the server believes it is.  The state is tagged with the
coordinator's SCAFFOLD run id: a job started again from scratch starts from
``c_i = 0`` like its server.

Local DP (:mod:`task_executor.privacy`) clips and noises the model delta last,
after everything else.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from libs.aggregation.attachments import CONTROL_DELTA, FILE, SERVER_CONTROL, file_bytes, join
from libs.aggregation.client_side import prox_penalty
from libs.errors import InvalidWeights, NsflError
from libs.files import write_atomic
from libs.tasks.spec import LocalDp
from libs.weights.tensors import WeightMap, decode, encode, read_metadata, validate_update
from task_executor import session as _session
from task_executor.errors import InvalidTask, SdkError
from task_executor.privacy import local_epsilon, privatize, read_uploads, write_uploads
from task_executor.task import TaskSpec

log = logging.getLogger(__name__)

CONTROL_FILE = "scaffold-control.safetensors"
_TAPS = {
    "pytorch": "task_executor.runtimes.torch_gradients",
    "tensorflow": "task_executor.runtimes.keras_gradients",
}


class GradientTap(Protocol):
    """What a runtime's gradient tap offers (see ``task_executor/runtimes/*_gradients.py``)."""

    @property
    def steps(self) -> int: ...

    def gradient_mean(self) -> WeightMap: ...

    def remove(self) -> None: ...


@dataclass(frozen=True)
class FedProx:
    """What ``nsfl.fedprox`` returns: the ``mu`` in force and the current proximal penalty."""

    mu: float
    _model: Any = None
    _round: ClientRound | None = None

    def penalty(self) -> float:
        """``(mu/2)||w - w_global||²`` for the model now (for logging; the gradient is applied already)."""
        if self._round is None or self._model is None or not self.mu:
            return 0.0
        session = _session.current()
        weights = session.runtime_of(self._model).weights_of(self._model, self._round.global_weights)
        floats = {n: a for n, a in weights.items() if a.dtype.kind == "f"}
        anchor = {n: self._round.global_weights[n] for n in floats}
        return prox_penalty(floats, anchor, self.mu)


class ClientRound:
    """One task's algorithm state on the client (see the module docstring)."""

    def __init__(
        self,
        spec: TaskSpec,
        global_weights: WeightMap | None,
        attachments: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.spec = spec
        self.config = spec.algorithm
        self.global_weights: WeightMap = dict(global_weights or {})
        self.attachments = {kind: dict(tensors) for kind, tensors in (attachments or {}).items()}
        self.metrics: dict[str, float] = {}
        self._rng = rng
        self._prox: GradientTap | None = None
        self._scaffold: GradientTap | None = None
        self._steps = 0
        self._gradient_mean: WeightMap = {}
        self._server_control: WeightMap = {}
        self._client_control: WeightMap = {}
        self._new_control: WeightMap | None = None
        if self.scaffold_on:
            self._load_controls()

    @property
    def training(self) -> bool:
        return self.spec.kind == "train"

    @property
    def scaffold_on(self) -> bool:
        return self.training and self.config.scaffold_run is not None

    # -- while the user's code runs ---------------------------------------------------------------
    @contextlib.contextmanager
    def active(self) -> Iterator[ClientRound]:
        """Current for the SDK while the user's code runs; the gradient taps come off afterwards."""
        global _current
        previous, _current = _current, self
        try:
            yield self
        finally:
            _current = previous
            if self._scaffold is not None:
                self._steps, self._gradient_mean = self._scaffold.steps, self._scaffold.gradient_mean()
            for tap in (self._prox, self._scaffold):
                if tap is not None:
                    tap.remove()

    def _install(self, model: Any, *, optimizer: Any, **how: Any) -> GradientTap:
        # The taps live with the runtime adapters, the only modules that import a framework.
        runtime = _session.current().runtime_of(model)
        module = importlib.import_module(_TAPS[runtime.name])
        tap: GradientTap = module.install(model, self.global_weights, optimizer=optimizer, **how)
        return tap

    def fedprox(self, model: Any, mu: float | None = None, optimizer: Any = None) -> FedProx:
        strength = self.config.fedprox_mu if mu is None else float(mu)
        if not self.training or not strength:
            if self.config.aggregation == "fedprox" and self.training:
                log.info("nsfl.fedprox: mu is 0, the proximal term is off")
            return FedProx(0.0)
        if strength < 0:
            raise SdkError(f"nsfl.fedprox: mu must be >= 0, got {strength}")
        if self._prox is not None:
            raise SdkError("nsfl.fedprox was already called in this task")
        self._prox = self._install(model, optimizer=optimizer, mu=strength)
        self.metrics["fedprox/mu"] = strength
        log.info("FedProx: proximal term mu = %g on", strength)
        return FedProx(strength, model, self)

    def scaffold(self, model: Any, optimizer: Any = None) -> bool:
        if not self.scaffold_on:
            return False
        if self._scaffold is not None:
            raise SdkError("nsfl.scaffold was already called in this task")
        shift = {
            name: (c - self._client_control[name]).astype(c.dtype) for name, c in self._server_control.items()
        }
        self._scaffold = self._install(model, optimizer=optimizer, shift=shift, record=True)
        log.info("SCAFFOLD: drift correction on (run %s)", self.config.scaffold_run)
        return True

    def broadcast_file(self, name: str) -> bytes:
        files = self.attachments.get(FILE, {})
        if name not in files:
            listed = ", ".join(sorted(files)) or "none"
            raise SdkError(f"no broadcast file {name!r} came with this round's model (files: {listed})")
        return file_bytes(files[name])

    # -- SCAFFOLD's control variates -----------------------------------------------------------
    def _state_dir(self) -> Path:
        if self.spec.state_dir is None:
            raise InvalidTask(
                "this job uses SCAFFOLD, which keeps a control variate per job on each client, "
                "but task.json names no state_dir; update the task manager"
            )
        self.spec.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.spec.state_dir

    def _load_controls(self) -> None:
        server = self.attachments.get(SERVER_CONTROL)
        if not server:
            raise InvalidTask("this SCAFFOLD task's global model carries no server control variate")
        floats = {name: a for name, a in self.global_weights.items() if a.dtype.kind == "f"}
        try:
            validate_update(server, floats)
        except NsflError as exc:
            raise InvalidTask(f"the server control variate does not fit the model: {exc.message}") from None
        self._server_control = dict(server)
        self._client_control = self._read_client_control(floats)

    def _read_client_control(self, floats: WeightMap) -> WeightMap:
        path = self._state_dir() / CONTROL_FILE
        zeros = {name: np.zeros_like(array) for name, array in floats.items()}
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return zeros
        try:
            if read_metadata(payload).get("run") != self.config.scaffold_run:
                log.info("SCAFFOLD: a new run of the job; the client control variate starts at zero")
                return zeros
            stored = decode(payload, copy=True)
            validate_update(stored, floats)
        except NsflError as exc:
            log.warning(
                "SCAFFOLD: the stored control variate is unusable (%s); starting at zero", exc.message
            )
            return zeros
        return stored

    def _write_client_control(self, control: WeightMap) -> None:
        data = encode(control, {"run": str(self.config.scaffold_run)})
        write_atomic(self._state_dir() / CONTROL_FILE, data, durable=False)

    def _control_delta(self) -> WeightMap:
        if self._scaffold is None:
            raise SdkError(
                "this job uses SCAFFOLD: call nsfl.scaffold(model) before training "
                "(for Keras after model.compile)"
            )
        if not self._steps:
            log.warning("SCAFFOLD: no training step was taken; the control variate is unchanged")
            self._new_control = None
            return {name: np.zeros_like(c) for name, c in self._client_control.items()}
        # c_i+ = mean raw gradient (option II, see the module docstring); untrained tensors keep c_i.
        new = {
            name: self._gradient_mean.get(name, c_i).astype(c_i.dtype, copy=False)
            for name, c_i in self._client_control.items()
        }
        self._new_control = new
        self.metrics["scaffold/steps"] = float(self._steps)
        return {
            name: (new[name].astype(np.float64) - c_i).astype(c_i.dtype)
            for name, c_i in self._client_control.items()
        }

    # -- after the user's code --------------------------------------------------------------------
    def finish(self, delta: WeightMap) -> WeightMap:
        """The train upload: ``delta`` privatised (local DP) with SCAFFOLD's ``Delta c_i`` attached."""
        if self.config.aggregation == "fedprox" and self.config.fedprox_mu and self._prox is None:
            raise SdkError(
                "this job uses FedProx: call nsfl.fedprox(model) before training "
                "(for Keras after model.compile)"
            )
        attachments: dict[str, WeightMap] = {}
        if self.scaffold_on:
            attachments[CONTROL_DELTA] = self._control_delta()
        if self.config.local_dp is not None:
            delta = self._privatize(delta, self.config.local_dp)
        try:
            return join(delta, attachments)
        except InvalidWeights as exc:
            raise SdkError(f"the update cannot be sent: {exc.message}") from None

    def _privatize(self, delta: WeightMap, config: LocalDp) -> WeightMap:
        state_dir = self.spec.state_dir
        uploads = read_uploads(state_dir) + 1
        if state_dir is not None:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_uploads(state_dir, uploads)  # spent once it leaves, accepted or not
        else:  # no ledger: the round number bounds how often this client can have uploaded
            log.warning("local DP: no state_dir to count uploads in; accounting with the round number")
            uploads = max(uploads, self.spec.round)
        rng = self._rng if self._rng is not None else np.random.default_rng()
        private, norm, clipped = privatize(delta, config, rng)
        epsilon = local_epsilon(config, uploads)
        self.metrics.update(
            {
                "privacy/uploads": float(uploads),
                "privacy/update_norm": norm,
                "privacy/clipped": float(clipped),
            }
        )
        if np.isfinite(epsilon):  # without noise there is no finite ε to report
            self.metrics["privacy/epsilon"] = epsilon
        log.info(
            "local DP: update norm %.4g%s, noise %.4g; ε = %.4g at δ = %g after %d upload(s)",
            norm,
            " (clipped)" if clipped else "",
            config.noise_multiplier * config.clip_norm,
            epsilon,
            config.target_delta,
            uploads,
        )
        return private

    def committed(self) -> None:
        """The coordinator accepted the update: keep SCAFFOLD's new client control variate."""
        if self._new_control is not None:
            self._write_client_control(self._new_control)


_current: ClientRound | None = None


def current() -> ClientRound | None:
    """The task's :class:`ClientRound` while its user code runs (None offline, e.g. the simulators)."""
    return _current
