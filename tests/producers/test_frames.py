"""The read loop's frame parser: captured payloads, malformed input, and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from alpaca_broker.schema import REQUIRED_KEYS
from producers.frames import clean_count, parse_frame, wire_models

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
WIRE = wire_models(REQUIRED_KEYS)


def test_captured_msgpack_frames_yield_every_market_message() -> None:
    frames = msgpack.unpackb((PAYLOADS / "market_data.msgpack").read_bytes())
    parsed = [parse_frame(frame, REQUIRED_KEYS) for frame in frames]
    assert all(p.malformed == [] for p in parsed)
    assert {m["T"] for p in parsed for m in p.market} == set("tqbudslcx")


def test_json_text_frames_are_read_too() -> None:
    frames = json.loads((PAYLOADS / "market_data.json").read_text())
    parsed = [parse_frame(json.dumps(frame), REQUIRED_KEYS) for frame in frames]
    assert sum(len(p.market) for p in parsed) == sum(len(frame) for frame in frames)


def test_bad_messages_are_skipped_while_the_rest_of_the_frame_flows() -> None:
    good = {"T": "t", "S": "AAPL", "p": 1.0, "s": 1, "t": 1}
    frame = msgpack.packb(
        [good, {"S": "AAPL"}, {"T": "zz", "S": "AAPL"}, {"T": "t", "S": "AAPL"}, 7, good]
    )
    parsed = parse_frame(frame, REQUIRED_KEYS)
    assert parsed.market == [good, good]
    assert [reason for reason, _ in parsed.malformed] == [
        "no T", "unknown type", "missing fields", "no T",
    ]  # fmt: skip


def test_control_messages_are_kept_apart() -> None:
    parsed = parse_frame(
        msgpack.packb([{"T": "error", "code": 406, "msg": "connection limit exceeded"}]),
        REQUIRED_KEYS,
    )
    assert parsed.control == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
    assert parsed.market == []


def test_undecodable_bytes_and_non_arrays_are_malformed() -> None:
    assert parse_frame(b"\xc1 not msgpack", REQUIRED_KEYS).malformed[0][0] == "undecodable frame"
    assert (
        parse_frame(msgpack.packb({"T": "t"}), REQUIRED_KEYS).malformed[0][0]
        == "frame is not an array"
    )


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=10,
)
messages = st.dictionaries(
    st.sampled_from(["T", "S", "t", "p", "s", "bp", "ap", "o", "h", "l", "c", "v", "x"]), values
) | st.fixed_dictionaries({"T": st.sampled_from(list("tqbudslcx")), "S": st.text(max_size=4)})


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    parse_frame(frame, REQUIRED_KEYS)


@given(st.lists(messages | values, max_size=12))
def test_every_message_of_a_fuzzed_frame_is_kept_or_counted(frame: list[object]) -> None:
    parsed = parse_frame(msgpack.packb(frame, use_bin_type=True), REQUIRED_KEYS)
    assert len(parsed.market) + len(parsed.control) + len(parsed.malformed) == len(frame)


@given(st.lists(messages | values, max_size=12))
def test_the_fast_path_counts_a_frame_only_when_the_slow_path_finds_it_all_market(
    frame: list[object],
) -> None:
    data = msgpack.packb(frame, use_bin_type=True)
    parsed = parse_frame(data, REQUIRED_KEYS)
    clean = not parsed.control and not parsed.malformed
    assert clean_count(data, WIRE) == (len(parsed.market) if clean else -1)


@given(st.binary(max_size=200))
def test_the_fast_path_refuses_arbitrary_bytes_or_counts_them_as_the_slow_path(
    data: bytes,
) -> None:
    parsed = parse_frame(data, REQUIRED_KEYS)
    count = clean_count(data, WIRE)
    assert count == -1 or (count == len(parsed.market) and not parsed.malformed)


def test_the_fast_path_counts_captured_frames_and_refuses_control_and_missing_keys() -> None:
    frames = msgpack.unpackb((PAYLOADS / "market_data.msgpack").read_bytes())
    for frame in frames:
        assert clean_count(frame, WIRE) == len(msgpack.unpackb(frame))
    error = msgpack.packb([{"T": "error", "code": 406, "msg": "connection limit exceeded"}])
    assert clean_count(error, WIRE) == -1
    assert clean_count(msgpack.packb([{"T": "t", "S": "AAPL", "t": 1, "p": 1.0}]), WIRE) == -1
