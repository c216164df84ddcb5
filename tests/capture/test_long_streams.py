"""Short and long streams through the httpx hook: chunks kept in memory, past the memory limit parsed
as they pass, and in every case the caller's bytes unchanged and one exact record."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import tokentrail
from tokentrail import _guard
from tokentrail.capture import _exchange
from tokentrail.enrich.count import count_text
from tokentrail.errors import InstrumentationWarning
from tokentrail.wire import openai_chat

from ..conftest import recorded

URL = "http://long.test/v1/chat/completions"
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def events(n: int) -> list[bytes]:
    """``n`` content events, then usage and ``[DONE]``: ``n + 2`` chunks, one event each."""

    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({"id": "c1", "model": "gpt-4o-mini", **obj}).encode() + b"\n\n"

    body = [event({"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}) for i in range(n)]
    return [*body, event({"choices": [], "usage": USAGE}), b"data: [DONE]\n\n"]


class Chunks(httpx2.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks


def client(chunks: list[bytes]) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks(chunks))

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def read(chunks: list[bytes], stop_after: int | None = None) -> list[bytes]:
    """Stream the request; return the chunks the caller saw (stopping early if asked)."""
    seen = []
    with client(chunks).stream("POST", URL, json={"model": "gpt-4o-mini", "stream": True}) as response:
        for chunk in response.iter_raw():
            seen.append(chunk)
            if stop_after is not None and len(seen) == stop_after:
                break
    return seen


@pytest.mark.parametrize("n", [0, 1, 61, 62, 63, 64, 65, 126, 127, 128, 129, 200])  # around streams.CHECK_EVERY
def test_every_chunk_passes_and_the_usage_is_recorded(db: Path, n: int) -> None:
    chunks = events(n)
    with tokentrail.run(f"long-{n}"):
        assert read(chunks) == chunks
    [record] = recorded(db, run=f"long-{n}")
    assert (record["status"], record["input_tokens"], record["output_tokens"], record["usage_source"]) == (
        "ok", 11, 7, "reported",
    )  # fmt: skip


@pytest.mark.parametrize("limit", [1, 500, 5_000])
def test_a_stream_past_the_memory_limit_is_parsed_as_it_passes(
    db: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    monkeypatch.setattr(_exchange.Deferred, "LIMIT", limit)
    whole = []
    monkeypatch.setattr(openai_chat.ChatCompletions, "parse_stream", lambda self, data, outcome: whole.append(data))
    chunks = events(300)
    with tokentrail.run("past-limit"):
        assert read(chunks) == chunks
    [record] = recorded(db, run="past-limit")
    assert (record["input_tokens"], record["output_tokens"], record["usage_source"]) == (11, 7, "reported")
    assert whole == [], "past the limit the stream must not be held whole"


def test_a_stream_closed_part_way_is_recorded_as_cancelled(db: Path) -> None:
    chunks = events(200)
    with tokentrail.run("closed"):
        assert read(chunks, stop_after=100) == chunks[:100]
    [record] = recorded(db, run="closed")
    seen_text = "".join(f"w{i} " for i in range(100))  # what the caller read: the count is a floor
    counted = count_text(seen_text, "gpt-4o-mini")
    assert counted is not None
    assert (record["status"], record["output_tokens"], record["output_source"]) == (
        "cancelled",
        counted.tokens,
        "counted",
    )
    assert record["flags"] == ["count_floor", "stream_incomplete"]


class Replayable(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A stream that can be iterated again (in memory, as a mock or a replay is)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_a_pass_over_a_finished_stream_is_not_recorded_again(db: Path, sync: bool) -> None:
    # openai 3.x drains an async stream after its end by iterating `response.stream` again: what a
    # re-iterable stream yields then is passed through, not fed to the record a second time.
    chunks = [*events(3)[:3], b"data: [DONE]\n\n"]  # no usage: the output is counted from the text

    def handler(request: Any) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Replayable(chunks))

    body = {"model": "gpt-4o-mini", "stream": True}
    with tokentrail.run(f"replayed-{sync}"):
        if sync:
            with httpx2.Client(transport=httpx2.MockTransport(handler)) as http:
                with http.stream("POST", URL, json=body) as response:
                    passes = [list(response.iter_raw()), list(response.stream)]
        else:

            async def both() -> list[list[bytes]]:
                async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
                    async with http.stream("POST", URL, json=body) as response:
                        return [[c async for c in response.aiter_raw()], [c async for c in response.stream]]

            passes = asyncio.run(both())
    assert passes == [chunks, chunks]
    [record] = recorded(db, run=f"replayed-{sync}")
    counted = count_text("w0 w1 w2 ", "gpt-4o-mini")
    assert counted is not None
    assert (record["status"], record["output_tokens"], record["output_source"]) == ("ok", counted.tokens, "counted")


def test_an_async_reader_that_stops_at_done_leaves_no_more_to_finalise(db: Path) -> None:
    # The openai SDK stops reading at [DONE] and closes the response. The async generators it leaves
    # suspended are finalised by asyncio, each with a task woken through the loop's self-pipe: closing
    # the response closes tokentrail's pass and its reader, so capture leaves none more than without.
    chunks = events(2)

    def handler(request: Any) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Replayable(chunks))

    async def read_to_done(finalised: list[str]) -> None:
        hooks = sys.get_asyncgen_hooks()

        def finalizer(agen: Any) -> None:
            finalised.append(agen.__qualname__)
            hooks.finalizer(agen)

        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            async with http.stream("POST", URL, json={"model": "gpt-4o-mini", "stream": True}) as response:
                async for chunk in response.aiter_raw():
                    if b"[DONE]" in chunk:
                        break
        gc.collect()
        await asyncio.sleep(0)  # the finalising tasks run

    with tokentrail.run("stops-at-done"):
        with_capture: list[str] = []
        asyncio.run(read_to_done(with_capture))
        [record] = recorded(db, run="stops-at-done")
        tokentrail.uninstrument()
        without: list[str] = []
        asyncio.run(read_to_done(without))
    assert sorted(with_capture) == sorted(without)
    assert (record["status"], record["input_tokens"], record["output_tokens"]) == ("ok", 11, 7)


def test_a_failure_while_keeping_chunks_leaves_the_stream_intact(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_STRICT", "0")
    _guard.reset_error_counts()
    monkeypatch.setattr(_exchange.Deferred, "LIMIT", 100)

    def boom(self: Any) -> None:
        raise RuntimeError("drain failed")

    monkeypatch.setattr(_exchange.Deferred, "_drain", boom)
    chunks = events(150)
    with pytest.warns(InstrumentationWarning), tokentrail.run("drain-fails"):
        assert read(chunks) == chunks
    assert _guard.error_counts().get("stream.chunk", 0) >= 1


# -- the final event ---------------------------------------------------------------------------------


def read_until_final_event(chunks: list[bytes], marker: bytes, url: str = URL) -> tuple[Any, Iterator[bytes]]:
    """Read chunks up to the first one holding ``marker`` and stop there, leaving the response and
    its iterator open (as litellm does with Anthropic streams); returns both, to keep them open."""
    http = client(chunks)
    response = http.send(http.build_request("POST", url, json={"stream": True}), stream=True)
    iterator = response.iter_raw()
    for chunk in iterator:
        if marker in chunk:
            break
    return response, iterator


def anthropic_events(*, server_tool: bool = False, stop_reason: str | None = "end_turn") -> list[bytes]:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    message = {"id": "m1", "model": "claude-x", "usage": {"input_tokens": 12, "output_tokens": 1}}
    block = (
        {"type": "server_tool_use", "id": "s1", "name": "web_search"} if server_tool else {"type": "text", "text": ""}
    )
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 9}}
    return [
        event("message_start", {"type": "message_start", "message": message}),
        event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"text": "hi"}}),
        event("message_delta", delta),
        event("message_stop", {"type": "message_stop"}),
    ]


ANTHROPIC_URL = "http://long.test/v1/messages"


@pytest.mark.parametrize("last_read", [b"message_stop", b"message_delta"])
def test_the_final_event_of_an_anthropic_stream_finishes_the_record(db: Path, last_read: bytes) -> None:
    # litellm stops reading at the message_delta with the stop reason: it holds the final usage.
    with tokentrail.run("anthropic-open"):
        response, _open = read_until_final_event(anthropic_events(), last_read, ANTHROPIC_URL)
        [record] = recorded(db, run="anthropic-open")
    response.close()
    assert (record["api"], record["status"], record["input_tokens"], record["output_tokens"], record["flags"]) == (
        "anthropic.messages", "ok", 12, 9, [],
    )  # fmt: skip


@pytest.mark.parametrize("events", [anthropic_events(server_tool=True), anthropic_events(stop_reason=None)],
                         ids=["server-tool", "no-stop-reason"])  # fmt: skip
def test_an_anthropic_delta_that_may_not_be_the_last_waits_for_message_stop(db: Path, events: list[bytes]) -> None:
    with tokentrail.run("not-final"):
        response, _open = read_until_final_event(events, b"message_delta", ANTHROPIC_URL)
        assert recorded(db, run="not-final") == []
        for _chunk in _open:  # message_stop
            pass
        [record] = recorded(db, run="not-final")
    response.close()
    assert (record["status"], record["output_tokens"]) == ("ok", 9)


def test_a_stream_left_open_after_its_final_event_is_recorded_once(db: Path) -> None:
    with tokentrail.run("left-open"):
        response, _open = read_until_final_event(anthropic_events(), b"message_stop", ANTHROPIC_URL)
        [record] = recorded(db, run="left-open")  # the response is still open
        response.close()
        assert len(recorded(db, run="left-open")) == 1, "closing it later must not record it twice"
    assert (record["status"], record["output_tokens"]) == ("ok", 9)


def test_openai_streams_are_recorded_when_their_body_ends(db: Path) -> None:
    # Only Anthropic streams end at their final event: the OpenAI SDKs read every stream to its end.
    with tokentrail.run("openai-open"):
        response, _open = read_until_final_event(events(3), b"[DONE]")
        assert recorded(db, run="openai-open") == []
        response.close()
    [record] = recorded(db, run="openai-open")
    assert (record["status"], record["output_tokens"]) == ("ok", 7)


@pytest.mark.parametrize(
    "text",
    ["event: message_stop", "\nevent: message_stop\n\n", "x\n\nevent: message_stop\n\nmore"],
    ids=["plain", "with-line-breaks", "between-blank-lines"],
)
def test_the_marker_quoted_in_the_text_does_not_end_the_stream(db: Path, text: str) -> None:
    # In the JSON of an event a line break is escaped: the marker is never at the start of a line.
    events = anthropic_events()
    quoted = {"type": "content_block_delta", "index": 0, "delta": {"text": text}}
    events[2] = f"event: content_block_delta\ndata: {json.dumps(quoted)}\n\n".encode()
    with tokentrail.run("quoted"):
        response, _open = read_until_final_event(events, b"message_stop", ANTHROPIC_URL)  # stops at the quote
        assert recorded(db, run="quoted") == [], "the quoted marker must not finish the record"
        response.close()
    [record] = recorded(db, run="quoted")
    assert record["status"] == "cancelled"


def test_a_final_event_split_across_chunks_is_finished_when_the_body_ends(db: Path) -> None:
    whole = b"".join(anthropic_events())
    cut = whole.rindex(b"message_stop") + 4  # inside the final event's data line: …"mess" | "age_stop"}…
    chunks = [whole[:cut], whole[cut:]]
    with tokentrail.run("split"):
        _response, _open = read_until_final_event(chunks, b"age_stop", ANTHROPIC_URL)
        assert recorded(db, run="split") == []
        for _chunk in _open:
            pass
    [record] = recorded(db, run="split")
    assert (record["status"], record["input_tokens"], record["output_tokens"]) == ("ok", 12, 9)
