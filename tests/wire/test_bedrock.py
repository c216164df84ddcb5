"""Amazon Bedrock: the event-stream decoder, Converse, ConverseStream, InvokeModel (every family's body),
InvokeModelWithResponseStream, the token-count headers and the model in the path.

Conventions under test (ARCHITECTURE.md §2): Bedrock's inputTokens excludes the cache, so input is the
sum; a stream cut before its last event says so; a corrupt frame never raises.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Source, Usage
from tokentrail.wire import bedrock
from tokentrail.wire._base import ParsedCall, StreamOutcome
from tokentrail.wire.bedrock import (
    CONVERSE,
    CONVERSE_STREAM,
    INVOKE,
    INVOKE_STREAM,
    SUFFIXES,
    model_from_path,
    usage_from_headers,
)
from tokentrail.wire.eventstream import EventStreamDecoder, Message, encode

from ..strategies import splits

REPORTED = Provenance(input=Source.REPORTED, output=Source.REPORTED)
MISSING = Provenance()
PARTIAL = Provenance(input=Source.PARTIAL, output=Source.PARTIAL)
PAYLOADS = Path(__file__).parent.parent / "payloads" / "bedrock"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def event(kind: str, obj: Any) -> bytes:
    """One ConverseStream / InvokeModelWithResponseStream event, as Bedrock frames it (with the padding ``p``)."""
    payload = dumps({**obj, "p": "abcdefgh"}) if isinstance(obj, dict) else obj
    return encode({":event-type": kind, ":content-type": "application/json", ":message-type": "event"}, payload)


def exception(kind: str = "modelStreamErrorException") -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return encode(headers, dumps({"message": "Model stream error"}))


def chunk(inner: Any) -> bytes:
    return event("chunk", {"bytes": base64.b64encode(dumps(inner)).decode()})


def feed_all(parser: Any, pieces: list[bytes], outcome: StreamOutcome = StreamOutcome.COMPLETE) -> ParsedCall:
    for piece in pieces:
        parser.feed(piece)
    return parser.finish(outcome)


def converse_stream(usage: Any = ..., *, cut: bool = False) -> bytes:
    parts = [
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo 😀"}}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("messageStop", {"stopReason": "end_turn"}),
    ]
    if not cut:
        if usage is ...:
            usage = {"inputTokens": 25, "outputTokens": 11, "totalTokens": 36}
        parts.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 457}}))
    return b"".join(parts)


CLAUDE_START = chunk(
    {
        "type": "message_start",
        "message": {
            "id": "msg_bdrk_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 2000,
                "cache_creation_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    }
)
CLAUDE_BODY = [
    CLAUDE_START,
    chunk({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    chunk({"type": "content_block_stop", "index": 0}),
    chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
]
CLAUDE_METRICS = {
    "inputTokenCount": 10,
    "outputTokenCount": 7,
    "invocationLatency": 900,
    "firstByteLatency": 300,
    "cacheReadInputTokenCount": 2000,
    "cacheWriteInputTokenCount": 0,
}


def claude_stream(*, metrics: Any = CLAUDE_METRICS, upto: int | None = None) -> bytes:
    parts = CLAUDE_BODY[:upto]
    if upto is None:
        parts = [*parts, chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics})]
    return b"".join(parts)


# -- the event-stream decoder ----------------------------------------------------------------------


# A message with one string header and a JSON payload, as printed in the Elixir event_stream package's
# docs (hex.pm/packages/event_stream), themselves from https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html
KNOWN_MESSAGE = (
    bytes([0, 0, 0, 62, 0, 0, 0, 32, 64, 93, 249, 70, 12])
    + b"content-type"
    + bytes([7, 0, 16])
    + b"application/json"
    + b'{"foo": "bar"}'
    + bytes([111, 162, 191, 59])
)


def test_decodes_a_published_message_and_encodes_it_back() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(KNOWN_MESSAGE) == [Message({"content-type": "application/json"}, b'{"foo": "bar"}')]
    assert not decoder.failed
    assert decoder.pending == 0
    assert encode({"content-type": "application/json"}, b'{"foo": "bar"}') == KNOWN_MESSAGE


def typed_message() -> bytes:
    """A message with one header of each of the ten value types."""
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")

    def header(name: str, kind: int, value: bytes) -> bytes:
        return bytes([len(name)]) + name.encode() + bytes([kind]) + value

    block = b"".join(
        [
            header("t", 0, b""),
            header("f", 1, b""),
            header("byte", 2, struct.pack(">b", -3)),
            header("short", 3, struct.pack(">h", -300)),
            header("int", 4, struct.pack(">i", 70000)),
            header("long", 5, struct.pack(">q", 2**40)),
            header("bytes", 6, struct.pack(">H", 3) + b"\x00\x01\x02"),
            header(":event-type", 7, struct.pack(">H", 5) + b"chunk"),
            header("ts", 8, struct.pack(">q", 1_700_000_000_000)),
            header("id", 9, u.bytes),
        ]
    )
    payload = b'{"ok":true}'
    prelude = struct.pack(">II", 16 + len(block) + len(payload), len(block))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + block + payload
    return message + struct.pack(">I", zlib.crc32(message))


def test_every_header_type() -> None:
    [message] = EventStreamDecoder().feed(typed_message())
    assert message.headers == {
        "t": True,
        "f": False,
        "byte": -3,
        "short": -300,
        "int": 70000,
        "long": 2**40,
        "bytes": b"\x00\x01\x02",
        ":event-type": "chunk",
        "ts": 1_700_000_000_000,
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    }
    assert message.payload == b'{"ok":true}'


def test_agrees_with_botocore() -> None:
    """An independent decoder (botocore's, which the AWS SDK for Python uses) reads the same messages."""
    eventstream = pytest.importorskip("botocore.eventstream")
    streams = [typed_message(), converse_stream(), claude_stream(), KNOWN_MESSAGE]
    streams += [p.read_bytes() for p in sorted(PAYLOADS.glob("*.eventstream"))]
    for raw in streams:
        buffer = eventstream.EventStreamBuffer()
        buffer.add_data(raw)
        theirs = [(m.payload, m.headers.get(":event-type")) for m in buffer]
        ours = [(m.payload, m.headers.get(":event-type")) for m in EventStreamDecoder().feed(raw)]
        assert ours == theirs
        assert ours


def decode_all(pieces: list[bytes]) -> tuple[list[Message], bool, int]:
    decoder = EventStreamDecoder()
    out: list[Message] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out, decoder.failed, decoder.pending


@settings(max_examples=60)
@given(st.data())
def test_any_split_decodes_the_same(data: st.DataObject) -> None:
    raw = typed_message() + claude_stream() + KNOWN_MESSAGE
    assert decode_all(data.draw(splits(raw, allow_empty=True))) == decode_all([raw])


def test_every_two_way_split_decodes_the_same() -> None:
    raw = converse_stream()
    whole = decode_all([raw])
    assert len(whole[0]) == 6
    for i in range(len(raw) + 1):
        assert decode_all([raw[:i], raw[i:]]) == whole, i


@pytest.mark.parametrize(
    ("where", "why", "before"),
    [
        (9, "prelude CRC mismatch", 0),
        (40, "message CRC mismatch", 0),
        (-2, "message CRC mismatch", 5),
        (3, "prelude CRC mismatch", 0),
    ],
)
def test_a_corrupt_byte_stops_the_decoder_without_raising(where: int, why: str, before: int) -> None:
    raw = bytearray(converse_stream())
    first = bytes(raw[:100])
    raw[where] ^= 0x40
    decoder = EventStreamDecoder()
    assert len(decoder.feed(bytes(raw))) == before  # the messages before the corrupt one are kept
    assert decoder.failed
    assert decoder.error == why
    assert decoder.pending == 0
    assert decoder.feed(first) == []  # nothing more is read after a corrupt frame


def test_a_later_corrupt_message_keeps_the_earlier_ones() -> None:
    good = event("messageStart", {"role": "assistant"})
    bad = bytearray(event("messageStop", {"stopReason": "end_turn"}))
    bad[-1] ^= 1
    messages, failed, _ = decode_all([good + bytes(bad) + good])
    assert [m.headers[":event-type"] for m in messages] == ["messageStart"]
    assert failed


@pytest.mark.parametrize(
    "garbage",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"message":"The security token included in the request is invalid."}',
        struct.pack(">II", 2**31, 0) + struct.pack(">I", zlib.crc32(struct.pack(">II", 2**31, 0))),
        struct.pack(">II", 20, 10) + struct.pack(">I", zlib.crc32(struct.pack(">II", 20, 10))) + b"x" * 8,
    ],
    ids=["html", "json", "huge-length", "headers-longer-than-message"],
)
def test_a_body_that_is_not_an_event_stream(garbage: bytes) -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(garbage) == []
    assert decoder.failed
    assert decoder.pending == 0  # nothing is buffered waiting for a length that will never come


def test_a_header_of_unknown_type_is_malformed() -> None:
    block = b"\x01x\x0a"  # type 10 does not exist
    prelude = struct.pack(">II", 16 + len(block), len(block))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + block
    message += struct.pack(">I", zlib.crc32(message))
    decoder = EventStreamDecoder()
    assert decoder.feed(message) == []
    assert decoder.error == "malformed headers"


def test_a_cut_message_is_held_back() -> None:
    raw = converse_stream()
    messages, failed, pending = decode_all([raw[:-5]])
    assert len(messages) == 5
    assert not failed
    assert pending > 0


# -- Converse ------------------------------------------------------------------------------------------


def converse_body(usage: Any) -> bytes:
    return dumps(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "Hi."}]}},
            "stopReason": "end_turn",
            "usage": usage,
            "metrics": {"latencyMs": 300},
        }
    )


def test_converse_plain() -> None:
    result = CONVERSE.parse(converse_body({"inputTokens": 30, "outputTokens": 628, "totalTokens": 658}))
    assert result.usage == Usage(input_tokens=30, output_tokens=628)
    assert (result.provenance, result.flags, result.complete, result.model) == (REPORTED, frozenset(), True, None)


def test_converse_input_includes_the_cache() -> None:
    usage = {
        "inputTokens": 14,
        "outputTokens": 352,
        "totalTokens": 4266,
        "cacheReadInputTokens": 100,
        "cacheWriteInputTokens": 3800,
    }
    result = CONVERSE.parse(converse_body(usage))
    assert result.usage == Usage(input_tokens=3914, output_tokens=352, cache_read_tokens=100, cache_write_tokens=3800)
    # Bedrock's totalTokens includes the cache too, so it agrees with input + output.
    assert result.usage.total_tokens == 4266
    assert result.flags == frozenset()
    assert result.raw_usage == usage


def test_converse_total_that_disagrees() -> None:
    result = CONVERSE.parse(converse_body({"inputTokens": 10, "outputTokens": 5, "totalTokens": 99}))
    assert result.flags == {Flag.TOTAL_MISMATCH}
    assert result.usage.total_tokens == 15


def test_converse_cache_without_its_base_count_is_no_input() -> None:
    # An inclusive sum without its uncached base would be a number Bedrock never reported.
    result = CONVERSE.parse(converse_body({"outputTokens": 5, "cacheReadInputTokens": 100}))
    assert result.usage == Usage(output_tokens=5, cache_read_tokens=100)
    assert result.provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)


@pytest.mark.parametrize("bad", [-1, "14", 14.0, True, None])
def test_converse_invalid_input_count(bad: Any) -> None:
    result = CONVERSE.parse(converse_body({"inputTokens": bad, "outputTokens": 5, "cacheReadInputTokens": 3}))
    assert result.usage.input_tokens is None
    assert result.usage.output_tokens == 5
    assert (Flag.INVALID_VALUE in result.flags) == (bad is not None)


@pytest.mark.parametrize("body", [b"", b"<html>502</html>", b'{"message":"Too many requests"}', b"\x00\x01"])
def test_converse_bodies_without_usage(body: bytes) -> None:
    for parser in (CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM):
        result = parser.parse(body)
        assert result.usage == Usage()
        assert result.provenance == MISSING


# -- ConverseStream ------------------------------------------------------------------------------------


def test_converse_stream() -> None:
    result = feed_all(CONVERSE_STREAM.stream(), [converse_stream()])
    assert result.usage == Usage(input_tokens=25, output_tokens=11)
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)


def test_converse_stream_with_cache() -> None:
    usage = {
        "inputTokens": 12,
        "outputTokens": 11,
        "totalTokens": 2071,
        "cacheReadInputTokens": 2048,
        "cacheWriteInputTokens": 0,
    }
    result = feed_all(CONVERSE_STREAM.stream(), [converse_stream(usage)])
    assert result.usage == Usage(input_tokens=2060, output_tokens=11, cache_read_tokens=2048, cache_write_tokens=0)
    assert result.flags == frozenset()


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_converse_stream_cut_before_metadata(outcome: StreamOutcome) -> None:
    result = feed_all(CONVERSE_STREAM.stream(), [converse_stream(cut=True)], outcome)
    assert (result.usage, result.provenance, result.flags, result.complete) == (
        Usage(),
        MISSING,
        {Flag.STREAM_INCOMPLETE},
        False,
    )


def test_converse_stream_closed_early_after_metadata_is_complete() -> None:
    result = feed_all(CONVERSE_STREAM.stream(), [converse_stream()], StreamOutcome.CLOSED_EARLY)
    assert (result.provenance, result.complete) == (REPORTED, True)


def test_converse_stream_exception_event() -> None:
    result = feed_all(CONVERSE_STREAM.stream(), [converse_stream(cut=True) + exception()])
    assert (result.usage, result.flags, result.complete) == (Usage(), {Flag.STREAM_INCOMPLETE}, False)


def test_converse_stream_corrupt_frame_is_unparsed_and_incomplete() -> None:
    raw = bytearray(converse_stream())
    raw[-30] ^= 0xFF  # inside the metadata message
    result = feed_all(CONVERSE_STREAM.stream(), [bytes(raw)])
    assert result.flags == {Flag.UNPARSED, Flag.STREAM_INCOMPLETE}
    assert (result.usage, result.provenance, result.complete) == (Usage(), MISSING, False)


def test_converse_stream_metadata_that_is_not_json() -> None:
    raw = converse_stream(cut=True) + event("metadata", b"{not json")
    result = feed_all(CONVERSE_STREAM.stream(), [raw])
    assert result.flags == {Flag.UNPARSED, Flag.STREAM_INCOMPLETE}


def test_converse_stream_invalid_usage_in_metadata() -> None:
    result = feed_all(
        CONVERSE_STREAM.stream(), [converse_stream({"inputTokens": -4, "outputTokens": 3, "totalTokens": 3})]
    )
    assert result.usage == Usage(output_tokens=3)
    assert result.flags == {Flag.INVALID_VALUE}
    assert result.complete


def test_converse_stream_body_read_whole_by_parse() -> None:
    raw = converse_stream()
    assert CONVERSE_STREAM.parse(raw) == feed_all(CONVERSE_STREAM.stream(), [raw])


# -- InvokeModel ------------------------------------------------------------------------------------------


def test_invoke_claude() -> None:
    body = {
        "id": "msg_bdrk_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 21,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1820,
            "output_tokens": 95,
        },
    }
    result = INVOKE.parse(dumps(body))
    assert result.usage == Usage(input_tokens=1941, output_tokens=95, cache_read_tokens=1820, cache_write_tokens=100)
    assert (result.model, result.response_id, result.provenance, result.flags) == (
        "claude-sonnet-4-5-20250929",
        "msg_bdrk_01",
        REPORTED,
        frozenset(),
    )


def test_invoke_claude_thinking_is_reasoning() -> None:
    usage = {"input_tokens": 5, "output_tokens": 300, "output_tokens_details": {"thinking_tokens": 250}}
    result = INVOKE.parse(dumps({"type": "message", "model": "m", "usage": usage}))
    assert result.usage == Usage(input_tokens=5, output_tokens=300, reasoning_tokens=250)


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        (
            {
                "inputTextTokenCount": 5,
                "results": [{"tokenCount": 30, "outputText": "x", "completionReason": "FINISH"}],
            },
            Usage(input_tokens=5, output_tokens=30),
        ),
        (
            {"inputTextTokenCount": 5, "results": [{"tokenCount": 3}, {"tokenCount": 4}]},
            Usage(input_tokens=5, output_tokens=7),
        ),
        ({"embedding": [0.1, 0.2], "inputTextTokenCount": 6}, Usage(input_tokens=6, output_tokens=0)),
        (
            {"generation": "x", "prompt_token_count": 25, "generation_token_count": 98, "stop_reason": "stop"},
            Usage(input_tokens=25, output_tokens=98),
        ),
        (
            {
                "output": {},
                "usage": {
                    "inputTokens": 40,
                    "outputTokens": 12,
                    "totalTokens": 2100,
                    "cacheReadInputTokenCount": 2048,
                    "cacheWriteInputTokenCount": 0,
                },
            },
            Usage(input_tokens=2088, output_tokens=12, cache_read_tokens=2048, cache_write_tokens=0),
        ),
        (
            {"output": {}, "usage": {"inputTokens": 4, "outputTokens": 2, "totalTokens": 6}},
            Usage(input_tokens=4, output_tokens=2),
        ),
        (
            {"id": "x", "choices": [], "usage": {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21}},
            Usage(input_tokens=17, output_tokens=4),
        ),
        (
            {"id": "x", "embeddings": [[0.1]], "meta": {"billed_units": {"input_tokens": 9}}},
            Usage(input_tokens=9, output_tokens=0),
        ),
        ({"outputs": [{"text": "x", "stop_reason": "stop"}]}, Usage()),
        ({"response_id": "r", "text": "x", "generation_id": "g", "finish_reason": "COMPLETE"}, Usage()),
        ({"choices": [{"index": 0, "text": "<think>", "stop_reason": "stop"}]}, Usage()),
        ({"completion": " Hi", "stop_reason": "stop_sequence"}, Usage()),
    ],
    ids=[
        "titan",
        "titan-2",
        "titan-embed",
        "llama",
        "nova-cache",
        "nova",
        "jamba",
        "cohere-embed",
        "mistral",
        "cohere",
        "deepseek",
        "claude-v2",
    ],
)
def test_invoke_families(body: dict[str, Any], usage: Usage) -> None:
    result = INVOKE.parse(dumps(body))
    assert result.usage == usage
    assert result.flags == frozenset()
    assert result.provenance == (REPORTED if usage.input_tokens is not None else MISSING)


@pytest.mark.parametrize("bad", [-1, "3", 2.5, True])
def test_invoke_titan_invalid_result_count(bad: Any) -> None:
    body = {"inputTextTokenCount": 5, "results": [{"tokenCount": 3}, {"tokenCount": bad}]}
    result = INVOKE.parse(dumps(body))
    assert result.usage == Usage(input_tokens=5)
    assert result.flags == {Flag.INVALID_VALUE}
    assert result.raw_usage == {"inputTextTokenCount": 5, "results": [{"tokenCount": 3}, {"tokenCount": bad}]}


def test_invoke_raw_usage_holds_counts_not_content() -> None:
    # The conventions keep counts, never prompts or completions (ARCHITECTURE.md §7).
    for body in (
        {"generation": "secret", "prompt_token_count": 1, "generation_token_count": 2},
        {"inputTextTokenCount": 1, "results": [{"tokenCount": 2, "outputText": "secret"}]},
    ):
        assert "secret" not in json.dumps(INVOKE.parse(dumps(body)).raw_usage)


# -- InvokeModelWithResponseStream ---------------------------------------------------------------------


def test_invoke_stream_claude() -> None:
    result = feed_all(INVOKE_STREAM.stream(), [claude_stream()])
    assert result.usage == Usage(input_tokens=2010, output_tokens=7, cache_read_tokens=2000, cache_write_tokens=0)
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)
    assert (result.model, result.response_id) == ("claude-sonnet-4-5-20250929", "msg_bdrk_01")
    assert result.raw_usage == CLAUDE_METRICS


@pytest.mark.parametrize("outcome", [StreamOutcome.BROKEN, StreamOutcome.CLOSED_EARLY, StreamOutcome.ABANDONED])
def test_invoke_stream_cut_keeps_what_claude_reported(outcome: StreamOutcome) -> None:
    result = feed_all(INVOKE_STREAM.stream(), [claude_stream(upto=3)], outcome)
    # message_start's counts: the input is known, the output so far is a floor.
    assert result.usage == Usage(input_tokens=2010, output_tokens=1, cache_read_tokens=2000, cache_write_tokens=0)
    assert (result.provenance, result.flags, result.complete) == (PARTIAL, {Flag.STREAM_INCOMPLETE}, False)


def test_invoke_stream_cut_inside_a_frame() -> None:
    raw = claude_stream()
    result = feed_all(INVOKE_STREAM.stream(), [raw[:-10]], StreamOutcome.BROKEN)
    assert result.usage.output_tokens == 7  # message_delta was seen
    assert (result.provenance, result.complete) == (PARTIAL, False)


def test_invoke_stream_body_ends_inside_a_frame_is_incomplete_even_if_the_transport_says_complete() -> None:
    result = feed_all(INVOKE_STREAM.stream(), [claude_stream(upto=4) + claude_stream()[:7]])
    assert not result.complete


def test_invoke_stream_llama_and_titan() -> None:
    llama = [
        chunk({"generation": "The", "prompt_token_count": 12, "generation_token_count": 1, "stop_reason": None}),
        chunk({"generation": " end", "prompt_token_count": None, "generation_token_count": 5, "stop_reason": None}),
    ]
    result = feed_all(INVOKE_STREAM.stream(), llama, StreamOutcome.BROKEN)
    assert result.usage == Usage(input_tokens=12, output_tokens=5)
    assert result.provenance == PARTIAL
    titan = [
        chunk({"outputText": "Hi", "inputTextTokenCount": 7, "totalOutputTextTokenCount": 1}),
        chunk({"outputText": "!", "totalOutputTextTokenCount": 2}),
    ]
    result = feed_all(INVOKE_STREAM.stream(), titan, StreamOutcome.CLOSED_EARLY)
    assert result.usage == Usage(input_tokens=7, output_tokens=2)
    assert result.raw_usage == {"inputTextTokenCount": 7, "totalOutputTextTokenCount": 2}


def test_invoke_stream_without_metrics_that_ends_cleanly() -> None:
    # A model whose chunks carry no counts and no metrics: complete once the model said it stopped.
    first = chunk({"outputs": [{"text": "Hi", "stop_reason": None}]})
    last = chunk({"outputs": [{"text": "!", "stop_reason": "stop"}]})
    result = feed_all(INVOKE_STREAM.stream(), [first + last])
    assert (result.usage, result.provenance, result.flags, result.complete) == (Usage(), MISSING, frozenset(), True)
    result = feed_all(INVOKE_STREAM.stream(), [first])
    assert (result.usage, result.provenance, result.flags, result.complete) == (
        Usage(),
        MISSING,
        {Flag.STREAM_INCOMPLETE},
        False,
    )


def test_invoke_stream_claude_without_metrics_but_message_stop() -> None:
    result = feed_all(INVOKE_STREAM.stream(), [claude_stream(upto=None, metrics=None)])
    assert (result.provenance, result.complete) == (REPORTED, True)
    assert result.usage == Usage(input_tokens=2010, output_tokens=7, cache_read_tokens=2000, cache_write_tokens=0)


def test_invoke_stream_nova_metadata() -> None:
    raw = chunk({"messageStart": {"role": "assistant"}}) + chunk(
        {"metadata": {"usage": {"inputTokens": 5, "outputTokens": 3}}}
    )
    result = feed_all(INVOKE_STREAM.stream(), [raw], StreamOutcome.BROKEN)
    assert result.usage == Usage(input_tokens=5, output_tokens=3)
    assert result.provenance == PARTIAL


def test_invoke_stream_exception_event() -> None:
    result = feed_all(INVOKE_STREAM.stream(), [claude_stream(upto=3) + exception("throttlingException")])
    assert (result.flags, result.complete, result.provenance) == ({Flag.STREAM_INCOMPLETE}, False, PARTIAL)


@pytest.mark.parametrize(
    "bad",
    [
        event("chunk", {"bytes": "%%% not base64 %%%"}),
        event("chunk", {"bytes": 12}),
        event("chunk", b"[1]"),
        chunk(["usage"]),
    ],
    ids=["base64", "not-a-string", "not-an-object", "inner-not-an-object"],
)
def test_invoke_stream_malformed_chunk_is_unparsed(bad: bytes) -> None:
    result = feed_all(INVOKE_STREAM.stream(), [bad + claude_stream()])
    assert Flag.UNPARSED in result.flags
    assert result.usage.output_tokens == 7  # the good chunks after it are still read


def test_invoke_stream_metrics_with_invalid_counts() -> None:
    result = feed_all(INVOKE_STREAM.stream(), [claude_stream(metrics={"inputTokenCount": "10", "outputTokenCount": 7})])
    assert result.usage == Usage(output_tokens=7)
    assert result.flags == {Flag.INVALID_VALUE}


def test_invoke_stream_body_read_whole_by_parse() -> None:
    raw = claude_stream()
    assert INVOKE_STREAM.parse(raw) == feed_all(INVOKE_STREAM.stream(), [raw])


# -- any split, same record --------------------------------------------------------------------------------

_STREAMS: dict[str, tuple[Any, bytes]] = {
    "converse": (CONVERSE_STREAM, converse_stream()),
    "converse-cut": (CONVERSE_STREAM, converse_stream(cut=True)),
    "invoke-claude": (INVOKE_STREAM, claude_stream()),
    "invoke-claude-cut": (INVOKE_STREAM, claude_stream(upto=4)),
}


@pytest.mark.parametrize("name", list(_STREAMS))
def test_every_two_way_split_gives_the_same_record(name: str) -> None:
    parser, raw = _STREAMS[name]
    whole = feed_all(parser.stream(), [raw])
    for i in range(1, len(raw)):
        assert feed_all(parser.stream(), [raw[:i], raw[i:]]) == whole, i


@settings(max_examples=40)
@given(st.data(), st.sampled_from(list(_STREAMS)), st.sampled_from(list(StreamOutcome)))
def test_any_split_gives_the_same_record(data: st.DataObject, name: str, outcome: StreamOutcome) -> None:
    parser, raw = _STREAMS[name]
    whole = feed_all(parser.stream(), [raw], outcome)
    assert feed_all(parser.stream(), data.draw(splits(raw, allow_empty=True)), outcome) == whole


# -- headers and path ----------------------------------------------------------------------------------------


def test_usage_from_headers() -> None:
    headers = httpx.Headers(
        {
            "X-Amzn-Bedrock-Input-Token-Count": "12",
            "X-Amzn-Bedrock-Output-Token-Count": "34",
            "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": "1000",
            "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": "0",
            "X-Amzn-Bedrock-Invocation-Latency": "532",
        }
    )
    result = usage_from_headers(headers)
    assert result is not None
    assert result.usage == Usage(input_tokens=1012, output_tokens=34, cache_read_tokens=1000, cache_write_tokens=0)
    assert (result.provenance, result.flags) == (REPORTED, frozenset())
    assert result.raw_usage == {
        "x-amzn-bedrock-input-token-count": "12",
        "x-amzn-bedrock-output-token-count": "34",
        "x-amzn-bedrock-cache-read-input-token-count": "1000",
        "x-amzn-bedrock-cache-write-input-token-count": "0",
    }


def test_usage_from_headers_absent_or_invalid() -> None:
    assert usage_from_headers(httpx.Headers({"content-type": "application/json"})) is None
    assert usage_from_headers({}) is None
    result = usage_from_headers(
        httpx.Headers({"x-amzn-bedrock-input-token-count": "-3", "x-amzn-bedrock-output-token-count": " 7 "})
    )
    assert result is not None
    assert result.usage == Usage(output_tokens=7)
    assert result.flags == {Flag.INVALID_VALUE}
    for bad in ("1e3", "٣", "12.0", ""):
        flagged = usage_from_headers({"x-amzn-bedrock-input-token-count": bad})
        assert flagged is not None and flagged.flags == {Flag.INVALID_VALUE} and flagged.usage == Usage(), bad


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("/model/us.amazon.nova-pro-v1%3A0/converse-stream", "us.amazon.nova-pro-v1:0"),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3d4/invoke-with-response-stream",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4",
        ),
        (
            "/model/arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-8b-instruct-v1:0/invoke",
            "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-8b-instruct-v1:0",
        ),
        ("/bedrock/model/mistral.mistral-large-2407-v1%3A0/converse", "mistral.mistral-large-2407-v1:0"),
        ("/v1/chat/completions", None),
        ("/model//converse", None),
    ],
)
def test_model_from_path(path: str, model: str | None) -> None:
    assert model_from_path(path) == model


@pytest.mark.parametrize(
    ("path", "parser"),
    [
        ("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", CONVERSE),
        ("/model/x/converse-stream", CONVERSE_STREAM),
        ("/model/x/invoke", INVOKE),
        ("/model/x/invoke-with-response-stream", INVOKE_STREAM),
        ("/model/x/count-tokens", None),
        ("/async-invoke", None),
        ("/guardrail/g1/version/1/apply", None),
        ("/v1/converse", None),
        ("/openai/v1/chat/completions", None),
    ],
)
def test_matches(path: str, parser: Any) -> None:
    owners = [p for p in bedrock.PARSERS if p.matches("POST", path)]
    assert owners == ([parser] if parser else [])
    if parser is not None:
        assert path.endswith(SUFFIXES)


def test_parse_request_streams_by_operation() -> None:
    body = dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "stream": False})
    assert (CONVERSE.parse_request(body).stream, CONVERSE_STREAM.parse_request(body).stream) == (False, True)
    assert (INVOKE.parse_request(body).stream, INVOKE_STREAM.parse_request(b"").stream) == (False, True)
    assert CONVERSE.parse_request(body).model is None
    assert {p.api for p in bedrock.PARSERS} == {"bedrock.converse", "bedrock.invoke"}


# -- golden corpus ------------------------------------------------------------------------------------------


def normalized(result: ParsedCall) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage.as_dict(),
        "provenance": {"input": result.provenance.input.value, "output": result.provenance.output.value},
        "flags": sorted(result.flags),
    }


def derive(path: Path) -> list[tuple[str, dict[str, Any]]]:
    raw = path.read_bytes()
    converse = path.name.startswith("converse")
    if path.suffix == ".json":
        return [("parse", normalized((CONVERSE if converse else INVOKE).parse(raw)))]
    parser = CONVERSE_STREAM if converse else INVOKE_STREAM
    out = [("parse", normalized(parser.parse(raw)))]
    for how, size in (("whole", len(raw)), ("7-byte pieces", 7)):
        out.append((how, normalized(feed_all(parser.stream(), [raw[i : i + size] for i in range(0, len(raw), size)]))))
    return out


GOLDEN = sorted(
    p for p in PAYLOADS.iterdir() if p.suffix in (".json", ".eventstream") and not p.name.endswith(".expected.json")
)


@pytest.mark.parametrize("path", GOLDEN, ids=[p.name for p in GOLDEN])
def test_golden(path: Path) -> None:
    expected_path = path.with_name(path.name.split(".")[0] + ".expected.json")
    results = derive(path)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected_path.write_text(json.dumps(results[0][1], indent=2) + "\n")
    expected = json.loads(expected_path.read_text())
    for how, got in results:
        assert got == expected, how


def test_golden_corpus_is_complete() -> None:
    assert len(GOLDEN) >= 15
    stems = {p.name.split(".")[0] for p in GOLDEN}
    assert stems == {p.name.removesuffix(".expected.json") for p in PAYLOADS.glob("*.expected.json")}
    sources = (PAYLOADS / "SOURCE.md").read_text()
    assert all(f"- SOURCE {stem}:" in sources for stem in stems), stems
