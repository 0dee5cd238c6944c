"""Atomic writes: a reader sees the old file or the new one, with the mode asked for, and no leftovers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from libs.files import write_atomic, write_json_atomic, write_text_atomic


def test_a_write_replaces_the_file_and_leaves_no_temporary_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "port"
    target.write_text("old\n")
    write_text_atomic(target, "4242\n")
    assert target.read_text() == "4242\n"
    assert os.listdir(tmp_path) == ["port"]


@pytest.mark.parametrize("durable", [True, False])
def test_the_file_has_the_mode_asked_for_whatever_the_umask(tmp_path: Path, durable: bool) -> None:
    previous = os.umask(0o077)
    try:
        write_atomic(tmp_path / "shared", b"x", durable=durable)
        write_atomic(tmp_path / "private", b"x", mode=0o600, durable=durable)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_json_is_written_with_sorted_keys_indented_or_on_one_line(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "pretty.json", {"b": 1, "a": [1, 2]})
    write_json_atomic(tmp_path / "compact.json", {"b": 1, "a": [1, 2]}, indent=None, durable=False)
    assert (tmp_path / "pretty.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert (tmp_path / "compact.json").read_text() == '{"a": [1, 2], "b": 1}\n'
    assert json.loads((tmp_path / "compact.json").read_text()) == {"a": [1, 2], "b": 1}


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    write_json_atomic(target, {"state": "RUNNING"})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"state": object()})
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "folder", b"x")  # the rename over a folder fails after the temporary is written
    assert json.loads(target.read_text()) == {"state": "RUNNING"}
    assert sorted(os.listdir(tmp_path)) == ["folder", "status.json"]
