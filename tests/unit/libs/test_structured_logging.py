"""Structured logs carry job, round and client ids in text and JSON output."""

from __future__ import annotations

import io
import json
import logging

import pytest

from libs.structured_logging import configure_logging, log_context


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    yield out
    configure_logging("WARNING", stream=io.StringIO())


def test_json_lines_carry_the_context_ids(stream: io.StringIO) -> None:
    configure_logging("INFO", json_output=True, stream=stream)
    with log_context(job="j1", round=3):
        logging.getLogger("nsfl.test").info("closed round with %d updates", 2, extra={"client": "c7"})
    record = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert record["message"] == "closed round with 2 updates"
    assert (record["job"], record["round"], record["client"]) == ("j1", 3, "c7")


def test_text_lines_append_the_ids(stream: io.StringIO) -> None:
    configure_logging("INFO", stream=stream)
    with log_context(job="j2", client="c1"):
        logging.getLogger("nsfl.test").warning("slow")
    line = stream.getvalue().strip().splitlines()[-1]
    assert line.endswith("[job=j2 client=c1]")


def test_context_does_not_leak_after_the_block(stream: io.StringIO) -> None:
    configure_logging("INFO", json_output=True, stream=stream)
    with log_context(job="j3"):
        pass
    logging.getLogger("nsfl.test").info("after")
    record = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert "job" not in record


def test_unknown_context_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log context keys"):
        with log_context(secret="x"):
            pass
