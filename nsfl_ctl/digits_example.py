"""The PyTorch digits example as the demo uses it: data shares, client configs, the job spec.

Everything comes from ``examples/pytorch_digits`` in this checkout, so the
demo runs exactly what the example documents: its ``data.py`` splits the
data, its ``train.py`` is the task entry, its ``job.yaml`` is the job.

Why the data module is loaded by file path and not imported: the ``opacus``
test dependency installs its own top-level ``examples`` package, which can
shadow ours on ``sys.path``; ``import examples.pytorch_digits.data`` would
then fail or, worse, load something else.  Loading
``<repo>/examples/pytorch_digits/data.py`` through
``importlib.util.spec_from_file_location`` cannot be shadowed.
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict

import yaml

from libs.errors import NotFound
from libs.jobspec import parse_spec_text, validate_spec
from libs.json_values import JsonObject
from nsfl_ctl.control_plane_plan import REPO_ROOT

EXAMPLE_DIR = REPO_ROOT / "examples" / "pytorch_digits"
TASK_ENTRY = "digits-pytorch"
DATASET = "digits"
_MODULE_NAME = "nsfl_ctl_digits_data"


def example_dir() -> Path:
    if not (EXAMPLE_DIR / "data.py").is_file():
        raise NotFound(
            f"the digits example is not at {EXAMPLE_DIR}: the demo runs from a checkout of nsfl "
            "(pip install -e .), not from an installed wheel"
        )
    return EXAMPLE_DIR


def load_data_module() -> ModuleType:
    """``examples/pytorch_digits/data.py`` of this checkout, loaded by path (see the module docstring)."""
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    path = example_dir() / "data.py"
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise NotFound(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module  # dataclasses look their module up while the body runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE_NAME]
        raise
    return module


class Share(TypedDict):
    """One client's share of the digits, as the example's ``data.write_splits`` describes it."""

    path: str
    train: int  # samples
    test: int
    labels: list[int]  # samples per digit


def write_shares(out: Path, clients: int, *, seed: int = 0) -> dict[str, Share]:
    """Disjoint IID shares of the digits, one folder per client: ``{client-i: {path, train, test, ...}}``."""
    written: dict[str, Share] = load_data_module().write_splits(out, clients, "iid", seed)
    return written


def client_config(
    client_id: str,
    *,
    selector_address: str,
    workspace: Path,
    share: Share,
    wire: Mapping[str, str],
) -> JsonObject:
    """A task manager config that offers only this client's own share and the example's script.

    ``wire`` holds its ``tls_*`` and ``trust_domain`` keys (a certificate for ``client/<client_id>``).
    """
    return {
        **wire,
        "client_id": client_id,
        "selector_address": selector_address,
        "workspace": str(workspace),
        "datasets": {
            DATASET: {"path": str(share["path"]), "samples": int(share["train"]), "tags": ["digits", "iid"]}
        },
        "task_entries": {
            TASK_ENTRY: {"script": str(example_dir() / "train.py"), "runtime": "pytorch", "mode": "script"},
        },
        "allowed_script_roots": [str(example_dir())],
        "max_parallel_tasks": 1,
        "task_timeout_seconds": 300,
        "resources": {"cpus": 1, "memory_mb": 1024, "gpus": 0},
    }


def write_client_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def job_spec(*, rounds: int, clients: int, namespace: str = "default") -> JsonObject:
    """The example's ``job.yaml`` for ``clients`` clients and ``rounds`` rounds, under a fresh name.

    Checked locally, so a broken example fails here and not half-way
    through the demo; the unvalidated spec is what is sent (the server
    writes in its own defaults).
    """
    path = example_dir() / "job.yaml"
    spec = parse_spec_text(path.read_text(encoding="utf-8"), str(path))
    spec.update(
        name=f"digits-demo-{secrets.token_hex(3)}", namespace=namespace, rounds=rounds,
        clientsPerRound=clients, minClients=max(1, clients - 1), evaluateEvery=1,
        taskEntry=TASK_ENTRY, runtime="pytorch", datasets=[DATASET],
    )  # fmt: skip
    validate_spec(spec)
    return spec
