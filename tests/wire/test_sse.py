"""The incremental SSE decoder: same events whatever the byte split.

Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.wire.sse import SseDecoder, SseEvent

from ..strategies import SseCase, splits, sse_streams


def decode(*chunks: bytes) -> list[tuple[str, bytes]]:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return [(e.event, e.data) for e in events]


@settings(max_examples=100)
@given(st.data(), sse_streams())
def test_any_split_gives_the_events_that_were_written(data: st.DataObject, case: SseCase) -> None:
    expected, raw = case
    assert decode(raw) == expected
    assert decode(*data.draw(splits(raw))) == expected


@settings(max_examples=50)
@given(sse_streams())
def test_byte_by_byte(case: SseCase) -> None:
    expected, raw = case
    assert decode(*(raw[i : i + 1] for i in range(len(raw)))) == expected


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_every_two_way_split(ending: bytes) -> None:
    raw = ending.join([b"event: x", b"data: h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", b"data: 2", b"", b": ping", b"", b"data: z", b"", b""])
    expected = [("x", "héllo € 😀\n2".encode()), ("message", b"z")]
    assert decode(raw) == expected
    for i in range(len(raw) + 1):
        assert decode(raw[:i], raw[i:]) == expected, i


def test_split_inside_crlf_is_one_line_end() -> None:
    # "\r" | "\n" must not count as two line ends (which would dispatch "a" early, and apart from "b").
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [("message", b"a\nb")]
    assert decode(b"data: a\r\n\r", b"\n") == [("message", b"a")]


def test_lone_cr_then_cr_is_two_line_ends() -> None:
    assert decode(b"data: a\r", b"\rdata: b\r\r") == [("message", b"a"), ("message", b"b")]


def test_empty_chunk_inside_crlf() -> None:
    # An empty read between "\r" and "\n" must not settle the pending CR.
    assert decode(b"data: a\r", b"", b"\ndata: b\r\n\r\n") == [("message", b"a\nb")]


@settings(max_examples=50)
@given(st.data(), sse_streams())
def test_empty_chunks_change_nothing(data: st.DataObject, case: SseCase) -> None:
    expected, raw = case
    assert decode(*data.draw(splits(raw, allow_empty=True))) == expected


def test_multi_line_data_is_joined_with_newline() -> None:
    assert decode(b"data: {\ndata:   \"a\": 1\ndata: }\n\n") == [("message", b'{\n  "a": 1\n}')]


def test_event_names() -> None:
    raw = b"event: response.created\ndata: 1\n\nevent:response.completed\ndata: 2\n\ndata: 3\n\n"
    assert decode(raw) == [("response.created", b"1"), ("response.completed", b"2"), ("message", b"3")]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    assert decode(b"event: a\ndata: 1\n\ndata: 2\n\n") == [("a", b"1"), ("message", b"2")]


def test_comments_are_ignored() -> None:
    raw = b": keepalive\n\n:\n\ndata: 1\n: inside\ndata: 2\n\n: OPENROUTER PROCESSING\n\n"
    assert decode(raw) == [("message", b"1\n2")]


def test_data_without_space_and_with_two_spaces() -> None:
    # Only one leading space is removed.
    assert decode(b"data:x\n\ndata:  x\n\ndata\n\n") == [("message", b"x"), ("message", b" x"), ("message", b"")]


def test_other_fields_and_lookalikes_are_ignored() -> None:
    raw = b"id: 7\nretry: 100\ndatabase: no\ndata: yes\n\nevent: only-a-name\n\n"
    assert decode(raw) == [("message", b"yes")]


def test_an_unterminated_last_event_is_dropped() -> None:
    # Per the spec; every OpenAI-shaped stream ends its events with a blank line.
    assert decode(b"data: 1\n\ndata: 2\n") == [("message", b"1")]
    assert decode(b"data: 1\n\ndata: 2") == [("message", b"1")]


def test_events_arrive_as_soon_as_their_blank_line_does() -> None:
    decoder = SseDecoder()
    assert list(decoder.feed(b"data: 1\n")) == []
    assert list(decoder.feed(b"\ndata: 2")) == [SseEvent("message", b"1")]
    assert list(decoder.feed(b"\n\n")) == [SseEvent("message", b"2")]
