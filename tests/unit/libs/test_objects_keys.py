"""Object keys and the storage layout: one definition of a valid key for every backend."""

from __future__ import annotations

import pytest

from libs.errors import InvalidKey
from libs.objects import keys, layout


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "ns/models/m/1/model.safetensors",
        ".hidden/x",
        "a/..b/c.",
        "ünïcode/名前",
        "x" * 255,
        "a/" * 500 + "b",
    ],
    ids=[
        "one-segment",
        "deep",
        "dot-file",
        "dots-inside-names",
        "unicode",
        "longest-segment",
        "many-segments",
    ],
)
def test_valid_keys_are_accepted_unchanged(key: str) -> None:
    assert keys.validate_key(key) == key
    assert keys.is_valid_key(key)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("/abs", "relative"),
        ("../x", "'..'"),
        ("a/../b", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "control"),
        ("a\x1fb", "control"),
        ("a\x7fb", "control"),
        ("a/.nsfl-meta/b", "reserved"),
        ("x" * 256, "255 bytes"),
        ("é" * 513, "1024 bytes"),
        ("a\ud800b", "Unicode"),
    ],
)
def test_invalid_keys_raise_invalid_key_naming_the_problem(key: str, problem: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        keys.validate_key(key)
    assert problem in caught.value.message
    assert not keys.is_valid_key(key)


def test_a_key_that_is_not_a_string_is_invalid() -> None:
    with pytest.raises(InvalidKey):
        keys.validate_key(b"bytes")  # type: ignore[arg-type]


def test_prefixes_split_into_complete_segments_and_a_partial_one() -> None:
    assert keys.prefix_segments("") == ((), "")
    assert keys.prefix_segments("ns/jobs/") == (("ns", "jobs"), "")
    assert keys.prefix_segments("ns/jobs/j") == (("ns", "jobs"), "j")
    assert keys.prefix_segments("a/..b") == (("a",), "..b")


@pytest.mark.parametrize("prefix", ["../", "/ns/", "a//", "a/./", "a\\", "a\x00", "ns/.nsfl-tmp"])
def test_invalid_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        keys.validate_prefix(prefix)


def test_layout_places_everything_under_its_namespace() -> None:
    assert layout.model_key("ns", "resnet", 3) == "ns/models/resnet/3/model.safetensors"
    assert (
        layout.round_key("ns", "j1", 7, "global.safetensors") == "ns/jobs/j1/rounds/000007/global.safetensors"
    )
    assert layout.round_prefix("ns", "j1") == "ns/jobs/j1/rounds/"
    assert layout.checkpoint_key("ns", "j1", 12) == "ns/checkpoints/j1/000012.safetensors"
    assert layout.output_key("ns", "j1", "plots/loss.png") == "ns/outputs/j1/plots/loss.png"
    assert layout.job_prefixes("ns", "j1") == ("ns/jobs/j1/rounds/", "ns/checkpoints/j1/", "ns/outputs/j1/")


def test_round_keys_sort_in_round_order() -> None:
    rounds = [layout.round_key("ns", "j", r, "delta") for r in (10, 2, 1, 100)]
    assert sorted(rounds) == [layout.round_key("ns", "j", r, "delta") for r in (1, 2, 10, 100)]


@pytest.mark.parametrize(
    "build",
    [
        lambda: layout.model_key("ns/../other", "m", 1),
        lambda: layout.model_key("ns", "..", 1),
        lambda: layout.round_key("ns", "j/../../x", 1, "d"),
        lambda: layout.round_key("ns", "j", -1, "d"),
        lambda: layout.round_key("ns", "j", True, "d"),
        lambda: layout.round_key("ns", "j", 1, "../../escape"),
        lambda: layout.checkpoint_key("", "j", 1),
        lambda: layout.output_key("ns", "j", "/abs"),
    ],
)
def test_layout_refuses_parts_that_would_leave_their_place(build: object) -> None:
    with pytest.raises(InvalidKey):
        build()  # type: ignore[operator]
