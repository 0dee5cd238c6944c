"""Helpers shared by the two parts of the DocumentStore contract."""

from __future__ import annotations

from typing import Any

import pytest

from libs.store import DocumentStore

NX_GAP = "nx-27017 gap (MongoDB itself passes): "


def nx_gap(request: pytest.FixtureRequest, reason: str) -> None:
    if "mongodb" in request.node.callspec.id:
        request.applymarker(pytest.mark.xfail(strict=True, reason=NX_GAP + reason))


async def keys(store: DocumentStore, collection: str, where: Any = None, **kwargs: Any) -> list[str]:
    return [document.key for document in await store.find(collection, where, **kwargs)]
