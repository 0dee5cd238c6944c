"""Spec builders shared by the jobspec tests."""

from __future__ import annotations

from typing import Any


def minimal(**fields: Any) -> dict[str, Any]:
    """The smallest valid spec, with ``fields`` added or replaced."""
    spec: dict[str, Any] = {"name": "mnist", "runtime": "pytorch", "taskEntry": "mnist-train"}
    spec.update(fields)
    return spec


def full() -> dict[str, Any]:
    """A spec that sets every field (valid)."""
    return {
        "name": "mnist",
        "namespace": "team-a",
        "description": "MNIST across three hospitals",
        "labels": {"app.kubernetes.io/name": "mnist", "tier": "gold"},
        "priority": 5,
        "runtime": "tensorflow",
        "modelRef": {"name": "mnist-cnn", "version": 3},
        "scripts": {"bundle": "bundles/mnist.tar.gz", "entry": "src/train.py", "mode": "function"},
        "mode": "function",
        "parameters": {"lr": 0.01, "epochs": 2, "layers": [32, 64], "opts": {"nesterov": True}, "tag": None},
        "datasets": ["mnist_train", "mnist-test"],
        "rounds": 50,
        "clientsPerRound": 3,
        "minClients": 2,
        "roundTimeoutSeconds": 600,
        "taskTimeoutSeconds": 500,
        "evaluateEvery": 5,
        "checkpointEvery": 10,
        "serverLearningRate": 0.5,
        "pendingTimeoutSeconds": 120,
        "maxRetries": 1,
        "clients": ["hospital-a", "hospital-b", "hospital-c"],
        "selector": {"labels": {"region": "eu"}, "resources": {"cpus": 1.5, "memoryMb": 2048, "gpus": 1}},
        "random": False,
        "untrainedFirst": True,
        "redundancy": 1.5,
        "aggregation": {"name": "fedadam", "params": {"tau": 0.001}},
        "optimizer": {"lr": 0.1, "beta1": 0.9},
        "privacy": {
            "dp": {
                "mode": "local",
                "clipNorm": 1.0,
                "noiseMultiplier": 1.1,
                "targetDelta": 1e-6,
                "targetEpsilon": 8,
            },
            "secureAggregation": {"mode": "one-mask", "threshold": 2, "bits": 24},
        },
        "extenders": {
            "file": "hooks.py",
            "broadcast": "on_broadcast",
            "aggregate": "combine",
            "finish": "done",
        },
        "output": {"modelName": "mnist-fed", "keepCheckpoints": 0},
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": 2, "memory": "1Gi"}},
    }
