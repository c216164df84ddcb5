"""Anthropic Messages: usage conventions, the split stream usage, cut streams, and the golden corpus.

Conventions under test (ARCHITECTURE.md §2): Anthropic's ``input_tokens`` is the uncached input, so
input = uncached + cache read + cache write; output includes thinking, and
``output_tokens_details.thinking_tokens`` is its reasoning part; stream usage is merged by field with
later values winning (never summed); a stream cut short says which side is a floor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Source, Usage
from tokentrail.wire._base import ParsedCall, StreamOutcome
from tokentrail.wire.anthropic_messages import MESSAGES, SUFFIXES, MessagesStream, message_call, usage_from

from ..strategies import splits, usages

REPORTED = Provenance(input=Source.REPORTED, output=Source.REPORTED)
MISSING = Provenance()
CUT = Provenance(input=Source.REPORTED, output=Source.PARTIAL)
PARTIAL = Provenance(input=Source.PARTIAL, output=Source.PARTIAL)
MODEL = "claude-sonnet-4-5-20250929"
PAYLOADS = Path(__file__).parent.parent / "payloads" / "anthropic_messages"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def body(usage: Any, *, content: list[Any] | None = None, model: str = MODEL) -> bytes:
    return dumps(
        {
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content if content is not None else [{"type": "text", "text": "Hi! My name is Claude."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    )


def named(*events: tuple[str, Any], ending: bytes = b"\n", names: bool = True) -> bytes:
    out = b""
    for name, obj in events:
        if names:
            out += b"event: " + name.encode() + ending
        out += b"data: " + dumps(obj) + ending + ending
    return out


def feed_all(pieces: list[bytes], outcome: StreamOutcome = StreamOutcome.COMPLETE) -> ParsedCall:
    stream = MESSAGES.stream()
    for piece in pieces:
        stream.feed(piece)
    return stream.finish(outcome)


def start(usage: Any, *, model: str = MODEL) -> tuple[str, Any]:
    message = {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": []}
    message |= {"model": model, "stop_reason": None, "stop_sequence": None, "usage": usage}
    return ("message_start", {"type": "message_start", "message": message})


def delta(usage: Any, stop: str | None = "end_turn") -> tuple[str, Any]:
    return (
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage},
    )


TEXT = [
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello — ünï 😀"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
]
STOP = ("message_stop", {"type": "message_stop"})
SERVER_TOOL = (
    "content_block_start",
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {}},
    },
)
START_USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 1000,
    "output_tokens": 1,
}


def stream_bytes(*, ending: bytes = b"\n", names: bool = True) -> bytes:
    return named(start(START_USAGE), *TEXT, delta({"output_tokens": 15}), STOP, ending=ending, names=names)


# -- non-stream usage ----------------------------------------------------------------------------------


def test_input_is_uncached_plus_cache_read_plus_cache_write() -> None:
    usage = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 1800,
        "cache_read_input_tokens": 3000,
        "output_tokens": 393,
    }
    result = MESSAGES.parse(body(usage))
    assert result.usage == Usage(input_tokens=4850, output_tokens=393, cache_read_tokens=3000, cache_write_tokens=1800)
    assert result.usage.total_tokens == 5243
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)
    assert (result.model, result.response_id) == (MODEL, "msg_013Zva2CMHLNnXjNJJKqJ2EF")
    assert result.usage_object() == usage  # kept as its JSON text by the fast lane


def test_without_cache_fields_the_cache_counts_are_unknown() -> None:
    result = MESSAGES.parse(body({"input_tokens": 2095, "output_tokens": 503}))
    assert result.usage == Usage(input_tokens=2095, output_tokens=503)
    assert result.provenance == REPORTED


def test_thinking_tokens_are_the_reasoning_part_of_output() -> None:
    usage = {"input_tokens": 54, "output_tokens": 2450, "output_tokens_details": {"thinking_tokens": 1200}}
    assert MESSAGES.parse(body(usage)).usage == Usage(input_tokens=54, output_tokens=2450, reasoning_tokens=1200)


def test_thinking_without_the_breakdown_is_in_output_but_reasoning_unknown() -> None:
    content = [{"type": "thinking", "thinking": "Let me think…", "signature": "EqQB"}, {"type": "text", "text": "42"}]
    result = MESSAGES.parse(body({"input_tokens": 54, "output_tokens": 2450}, content=content))
    assert result.usage == Usage(input_tokens=54, output_tokens=2450)
    assert result.usage.reasoning_tokens is None


def test_server_tool_counts_and_tier_are_kept_raw_not_counted() -> None:
    usage = {
        "input_tokens": 6039,
        "output_tokens": 931,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1},
        "service_tier": "priority",
        "inference_geo": "us",
    }
    result = MESSAGES.parse(body(usage))
    assert result.usage == Usage(input_tokens=6039, output_tokens=931, cache_read_tokens=0, cache_write_tokens=0)
    assert result.usage_object() == usage
    assert result.flags == frozenset()


def test_top_level_fields_win_over_a_tool_inputs_namesakes() -> None:
    content = [
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "find_car",
            "input": {"model": "Civic", "id": "x", "usage": {"input_tokens": 9}},
        }
    ]
    result = MESSAGES.parse(body({"input_tokens": 7, "output_tokens": 3}, content=content))
    assert (result.model, result.response_id, result.usage.input_tokens) == (MODEL, "msg_013Zva2CMHLNnXjNJJKqJ2EF", 7)
    # Key order does not matter either (a gateway that sorts keys).
    sorted_body = json.dumps(
        json.loads(body({"input_tokens": 7, "output_tokens": 3}, content=content)), sort_keys=True
    ).encode()
    assert MESSAGES.parse(sorted_body) == result


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_message_is_unparsed(raw: bytes) -> None:
    result = MESSAGES.parse(raw)
    assert (result.usage, result.provenance, result.flags) == (Usage(), MISSING, {Flag.UNPARSED})


def test_an_error_object_has_no_usage() -> None:
    result = MESSAGES.parse(dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    assert (result.usage, result.provenance, result.flags) == (Usage(), MISSING, frozenset())


# -- malformed counts ------------------------------------------------------------------------------------

BAD = [-1, "5", True, 1.5, [3], {"n": 1}]


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize(
    "field", ["input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens"]
)
def test_an_invalid_count_is_flagged_and_unknown_never_raised(field: str, bad: Any) -> None:
    usage = {"input_tokens": 10, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 30, "output_tokens": 40}
    result = MESSAGES.parse(body({**usage, field: bad}))
    assert Flag.INVALID_VALUE in result.flags
    assert result.raw_usage[field] == bad
    if field == "output_tokens":
        assert (result.usage.output_tokens, result.usage.input_tokens) == (None, 60)
        assert result.provenance == Provenance(input=Source.REPORTED, output=Source.MISSING)
    else:
        # Every input bucket feeds the input sum: one bad part makes the whole unknown.
        assert (result.usage.input_tokens, result.usage.output_tokens) == (None, 40)
        assert result.provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)
    assert result.usage.total_tokens is None


def test_null_cache_counts_mean_not_reported() -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None,
        "output_tokens": 4,
    }
    result = MESSAGES.parse(body(usage))
    assert (result.usage, result.flags) == (Usage(input_tokens=10, output_tokens=4), frozenset())


def test_cache_counts_without_input_tokens_do_not_make_an_input() -> None:
    usage, provenance, flags = usage_from({"cache_read_input_tokens": 500, "output_tokens": 4})
    assert usage == Usage(output_tokens=4, cache_read_tokens=500)
    assert provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)
    assert flags == set()


@pytest.mark.parametrize("raw", [[1], "usage", 5, True])
def test_a_usage_that_is_not_an_object_is_invalid(raw: Any) -> None:
    result = MESSAGES.parse(body(raw))
    assert (result.usage, result.provenance, result.flags, result.raw_usage) == (
        Usage(),
        MISSING,
        {Flag.INVALID_VALUE},
        raw,
    )


def test_thinking_larger_than_output_is_flagged() -> None:
    result = MESSAGES.parse(
        body({"input_tokens": 5, "output_tokens": 10, "output_tokens_details": {"thinking_tokens": 11}})
    )
    assert result.flags == {Flag.PARTS_EXCEED_WHOLE}
    assert result.usage == Usage(input_tokens=5, output_tokens=10, reasoning_tokens=11)  # kept, flagged


@pytest.mark.parametrize(
    ("ttl", "flags"),
    [
        ({"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 40}, set()),
        ({"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 41}, {Flag.PARTS_EXCEED_WHOLE}),
        ({"ephemeral_5m_input_tokens": -1, "ephemeral_1h_input_tokens": 0}, {Flag.INVALID_VALUE}),
        ({"ephemeral_5m_input_tokens": "60"}, {Flag.INVALID_VALUE}),
        ([60, 40], {Flag.INVALID_VALUE}),
        ({}, set()),
    ],
)
def test_the_ttl_breakdown_is_part_of_the_cache_write(ttl: Any, flags: set[str]) -> None:
    usage = {
        "input_tokens": 1,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
        "cache_creation": ttl,
    }
    result = MESSAGES.parse(body(usage))
    assert result.flags == flags
    assert result.usage.cache_write_tokens == 100


@settings(max_examples=150)
@given(usages())
def test_any_conventional_usage_reads_back(u: Usage) -> None:
    """A usage rendered in Anthropic's shape (uncached input apart) parses back to itself."""
    raw: dict[str, Any] = {}
    if u.input_tokens is not None:
        raw["input_tokens"] = u.input_tokens - (u.cache_read_tokens or 0) - (u.cache_write_tokens or 0)
    if u.cache_read_tokens is not None:
        raw["cache_read_input_tokens"] = u.cache_read_tokens
    if u.cache_write_tokens is not None:
        raw["cache_creation_input_tokens"] = u.cache_write_tokens
    if u.output_tokens is not None:
        raw["output_tokens"] = u.output_tokens
    if u.reasoning_tokens is not None:
        raw["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    usage, provenance, flags = usage_from(raw)
    assert usage == u
    assert flags == set()
    assert provenance.input is (Source.REPORTED if u.input_tokens is not None else Source.MISSING)


def test_message_call_takes_a_decoded_message() -> None:
    message = json.loads(body({"input_tokens": 3, "output_tokens": 4}))
    assert message_call(message) == MESSAGES.parse(body({"input_tokens": 3, "output_tokens": 4}))
    assert message_call(None).flags == {Flag.UNPARSED}


# -- streams ----------------------------------------------------------------------------------------------


def test_stream_merges_start_and_delta_never_sums_output() -> None:
    result = feed_all([stream_bytes()])
    assert result.usage == Usage(input_tokens=1125, output_tokens=15, cache_read_tokens=1000, cache_write_tokens=100)
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)
    assert (result.model, result.response_id) == (MODEL, "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY")
    assert result.raw_usage == {**START_USAGE, "output_tokens": 15}


def test_stream_is_the_same_as_the_equivalent_body() -> None:
    final = {**START_USAGE, "output_tokens": 15}
    streamed, whole = feed_all([stream_bytes()]), MESSAGES.parse(body(final, model=MODEL))
    assert (streamed.usage, streamed.provenance, streamed.flags) == (whole.usage, whole.provenance, whole.flags)


def test_delta_repeating_the_input_side_replaces_it() -> None:
    raw = named(
        start(
            {"input_tokens": 2679, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 3}
        ),
        SERVER_TOOL,
        delta(
            {
                "input_tokens": 10682,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 510,
                "server_tool_use": {"web_search_requests": 1},
            }
        ),
        STOP,
    )
    result = feed_all([raw])
    assert result.usage == Usage(input_tokens=10682, output_tokens=510, cache_read_tokens=0, cache_write_tokens=0)
    assert result.raw_usage["server_tool_use"] == {"web_search_requests": 1}
    assert result.provenance == REPORTED


def test_null_fields_in_a_delta_do_not_erase_the_start() -> None:
    raw = named(
        start(START_USAGE), delta({"input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 9}), STOP
    )
    result = feed_all([raw])
    assert (result.usage.input_tokens, result.usage.output_tokens) == (1125, 9)


def test_several_deltas_the_last_cumulative_count_wins() -> None:
    raw = named(
        start(START_USAGE), SERVER_TOOL, delta({"output_tokens": 40}, stop=None), delta({"output_tokens": 90}), STOP
    )
    assert feed_all([raw]).usage.output_tokens == 90


def test_thinking_breakdown_arrives_with_the_final_delta() -> None:
    raw = named(
        start(START_USAGE),
        *TEXT,
        delta({"output_tokens": 318, "output_tokens_details": {"thinking_tokens": 287}}),
        STOP,
    )
    assert feed_all([raw]).usage.reasoning_tokens == 287


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_cut_after_message_start_input_is_final_output_a_floor(outcome: StreamOutcome) -> None:
    result = feed_all([named(start(START_USAGE), *TEXT)], outcome)
    assert result.usage == Usage(input_tokens=1125, output_tokens=1, cache_read_tokens=1000, cache_write_tokens=100)
    assert result.provenance == CUT
    assert result.flags == {Flag.STREAM_INCOMPLETE}
    assert not result.complete
    assert result.model == MODEL


def test_cut_after_a_server_tool_started_input_is_a_floor_too() -> None:
    result = feed_all([named(start(START_USAGE), SERVER_TOOL)], StreamOutcome.BROKEN)
    assert result.provenance == PARTIAL
    assert result.flags == {Flag.STREAM_INCOMPLETE}


def test_mcp_tool_use_counts_as_a_server_tool() -> None:
    mcp = (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "mcp_tool_use",
                "id": "mcptoolu_1",
                "name": "echo",
                "server_name": "s",
                "input": {},
            },
        },
    )
    assert feed_all([named(start(START_USAGE), mcp)], StreamOutcome.BROKEN).provenance == PARTIAL


def test_cut_between_the_final_delta_and_message_stop() -> None:
    raw = named(start(START_USAGE), *TEXT, delta({"output_tokens": 15}))
    # The final delta carries the whole bill, however the body ended after it: a gateway dropping
    # message_stop, or a client (litellm) that stops reading there and never closes the response.
    for outcome in StreamOutcome:
        whole = feed_all([raw], outcome)
        assert (whole.usage.output_tokens, whole.provenance, whole.flags, whole.complete) == (
            15, REPORTED, frozenset(), True,
        )  # fmt: skip


def test_closed_right_after_message_stop_is_complete() -> None:
    result = feed_all([stream_bytes()], StreamOutcome.CLOSED_EARLY)
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_an_error_event_mid_stream(outcome: StreamOutcome) -> None:
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    result = feed_all([named(start(START_USAGE), *TEXT, error)], outcome)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (1125, 1)
    assert result.provenance == CUT
    assert result.flags == {Flag.STREAM_INCOMPLETE}
    assert not result.complete


def test_an_error_before_message_start() -> None:
    error = ("error", {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}})
    result = feed_all([named(error)])
    assert (result.usage, result.provenance, result.flags, result.complete, result.model) == (
        Usage(),
        MISSING,
        {Flag.STREAM_INCOMPLETE},
        False,
        None,
    )


def test_nothing_at_all() -> None:
    result = feed_all([])
    assert (result.usage, result.provenance, result.flags, result.complete) == (
        Usage(),
        MISSING,
        {Flag.STREAM_INCOMPLETE},
        False,
    )


def test_unnamed_events_read_like_named_ones() -> None:
    # Gateways that drop the `event:` lines; the payload's "type" names the event.
    assert feed_all([stream_bytes(names=False)]) == feed_all([stream_bytes()])


def test_event_is_reusable_without_sse() -> None:
    parser = MessagesStream()
    for name, obj in (start(START_USAGE), *TEXT, delta({"output_tokens": 15}), STOP):
        parser.event("message" if name != "ping" else name, dumps(obj))
    assert parser.finish(StreamOutcome.COMPLETE) == feed_all([stream_bytes()])


def test_malformed_events_do_not_raise() -> None:
    raw = (
        b"event: message_start\ndata: {not json\n\n"
        + b"event: message_start\ndata: [1]\n\n"
        + b'event: message_start\ndata: {"message": "x"}\n\n'
        + named(start({"input_tokens": -5, "output_tokens": 1}), delta("nope"), delta({"output_tokens": "9"}), STOP)
        + b"event: message_delta\ndata: null\n\n"
    )
    result = feed_all([raw])
    assert result.usage == Usage()
    assert result.flags == {Flag.INVALID_VALUE}
    assert result.complete


def test_a_start_usage_that_is_not_an_object_is_invalid() -> None:
    result = feed_all([named(start([25]), delta({"output_tokens": 15}), STOP)])
    assert (result.usage, result.flags) == (Usage(output_tokens=15), {Flag.INVALID_VALUE})  # the delta's object stands
    result = feed_all([named(start([25]), STOP)])
    assert (result.usage, result.flags) == (Usage(), {Flag.INVALID_VALUE})


# -- any split, same record ---------------------------------------------------------------------------

_STREAMS = {
    "lf": stream_bytes(),
    "crlf": stream_bytes(ending=b"\r\n"),
    "cr": stream_bytes(ending=b"\r"),
    "unnamed": stream_bytes(names=False),
    "web-search": (PAYLOADS / "stream_web_search.sse").read_bytes(),
    "cut": named(start(START_USAGE), *TEXT),
}


@pytest.mark.parametrize("name", ["lf", "crlf", "cr", "cut"])
def test_every_two_way_split_gives_the_same_record(name: str) -> None:
    raw = _STREAMS[name]
    whole = feed_all([raw])
    for i in range(1, len(raw)):
        assert feed_all([raw[:i], raw[i:]]) == whole, i


@settings(max_examples=60)
@given(st.data(), st.sampled_from(list(_STREAMS)), st.sampled_from(list(StreamOutcome)))
def test_any_split_gives_the_same_record(data: st.DataObject, name: str, outcome: StreamOutcome) -> None:
    raw = _STREAMS[name]
    assert feed_all(data.draw(splits(raw, allow_empty=True)), outcome) == feed_all([raw], outcome)


# -- request and path ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "owned"),
    [
        ("/v1/messages", True),
        ("/api/v1/messages", True),  # OpenRouter's Anthropic-compatible endpoint
        ("/anthropic/v1/messages", True),
        ("/v1/messages/count_tokens", False),  # counts tokens, bills nothing
        ("/v1/messages/batches", False),
        ("/v1/messages/batches/msgbatch_01/results", False),
        ("/v1/complete", False),
        ("/v1/chat/completions", False),
        ("/v1/models", False),
    ],
)
def test_matches(path: str, owned: bool) -> None:
    assert MESSAGES.matches("POST", path) is owned
    if owned:
        assert path.endswith(SUFFIXES)


def test_parse_request() -> None:
    tools = [
        {
            "name": "find_car",
            "input_schema": {
                "type": "object",
                "properties": {"model": {"type": "string"}, "stream": {"type": "boolean"}},
            },
        }
    ]
    req = dumps(
        {
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Hello"}],
            "model": MODEL,
            "stream": True,
            "tools": tools,
        }
    )
    info = MESSAGES.parse_request(req)
    assert (info.model, info.stream) == (MODEL, True)
    assert MESSAGES.parse_request(b"").model is None
    assert MESSAGES.api == "anthropic.messages"


# -- golden corpus ------------------------------------------------------------------------------------------


def normalized(result: ParsedCall) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage.as_dict(),
        "provenance": {"input": result.provenance.input.value, "output": result.provenance.output.value},
        "flags": sorted(result.flags),
    }


CASES = sorted(p for p in PAYLOADS.iterdir() if p.suffix in (".json", ".sse") and not p.name.endswith(".expected.json"))


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_golden(path: Path) -> None:
    expected = json.loads(path.with_name(path.stem + ".expected.json").read_text())
    raw = path.read_bytes()
    if path.suffix == ".json":
        assert normalized(MESSAGES.parse(raw)) == expected
        return
    for size in (len(raw) or 1, 7, 1):
        stream = MESSAGES.stream()
        for i in range(0, len(raw), size):
            stream.feed(raw[i : i + size])
        assert normalized(stream.finish(StreamOutcome.COMPLETE)) == expected, size


def test_every_case_has_a_source_line() -> None:
    import re

    sources = set(re.findall(r"^- SOURCE ([\w.-]+):", (PAYLOADS / "SOURCE.md").read_text(), re.MULTILINE))
    assert {p.stem for p in CASES} <= sources
    assert {p.stem for p in CASES} == {p.name.removesuffix(".expected.json") for p in PAYLOADS.glob("*.expected.json")}
    assert {p.suffix for p in CASES} == {".json", ".sse"}


def test_an_event_stream_read_whole_parses_like_the_stream() -> None:
    # A client that sent stream: true but read the body in one go hands the events to parse().
    assert MESSAGES.parse(stream_bytes()) == feed_all([stream_bytes()])
    assert MESSAGES.parse(stream_bytes(ending=b"\r\n").rstrip()) == feed_all([stream_bytes()])
    cut = MESSAGES.parse(named(start(START_USAGE), *TEXT))
    assert (cut.provenance, cut.complete) == (CUT, False)
