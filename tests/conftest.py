"""Test-suite wiring: fixture plugins for the real protocol servers and shared helpers."""

pytest_plugins = [
    "tests.fixtures.mongo",
    "tests.fixtures.s3",
    "tests.fixtures.pki",
]
