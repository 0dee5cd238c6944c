"""Fixtures of the contract suites: one DocumentStore per backend (SQLite and MongoDB).

The object store suite defines its own ``store`` fixture, which takes precedence there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from libs.store import DocumentStore, open_document_store


@pytest.fixture(params=["sqlite", "mongodb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite://" + quote(str(tmp_path / "state.db"))
    url: str = request.getfixturevalue("mongo_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[DocumentStore]:
    opened = await open_document_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()
