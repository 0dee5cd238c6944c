"""Test-suite wiring: fixture plugins for the real protocol servers and shared helpers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.mongo",
    "tests.fixtures.s3",
    "tests.fixtures.pki",
]


@pytest.fixture(autouse=True)
def nsfl_logging_left_as_found() -> Iterator[None]:
    """A test that runs a component's ``main`` in-process installs nsfl's log handler on the root logger,
    writing to that test's captured stderr; later tests must not log into a stream pytest has closed."""
    root = logging.getLogger()
    before, level = [h for h in root.handlers if getattr(h, "_nsfl", False)], root.level
    yield
    for handler in [h for h in root.handlers if getattr(h, "_nsfl", False) and h not in before]:
        root.removeHandler(handler)
    for handler in before:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
