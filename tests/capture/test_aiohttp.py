"""Real aiohttp against the simulator on loopback: every attempt recorded, every byte passed unchanged."""

from __future__ import annotations

import asyncio
import gc
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tokentrail
from tests.conftest import recorded
from tokentrail import _guard
from tokentrail.capture import _exchange
from tokentrail.capture import aiohttp as capture
from tokentrail.sim import Simulator
from tokentrail.wire import openai_chat

aiohttp = pytest.importorskip("aiohttp")

PATH = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Name three rivers."}]}
STREAM = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


@pytest.fixture
def hooked(db: Path) -> Iterator[Path]:
    assert capture.install() == ["aiohttp"]
    assert capture.install() == ["aiohttp"]  # idempotent
    try:
        yield db
    finally:
        capture.uninstall()


class _Tap:
    def __init__(self, parser: Any, chunks: list[bytes]) -> None:
        self.parser, self.chunks = parser, chunks

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(bytes(chunk))
        self.parser.feed(chunk)

    def finish(self, outcome: Any) -> Any:
        return self.parser.finish(outcome)


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """What the stream parser of each exchange was fed."""
    chunks: list[list[bytes]] = []
    original = _exchange.Exchange.stream_started

    def stream_started(exchange: _exchange.Exchange, status: int, headers: Any) -> Any:
        chunks.append([])
        return _Tap(original(exchange, status, headers), chunks[-1])

    monkeypatch.setattr(_exchange.Exchange, "stream_started", stream_started)
    return chunks


def normal(data: bytes) -> bytes:
    """A reply without the fields that differ between two identical requests (ids, clocks)."""
    return re.sub(rb'"(id|created)":("[^"]*"|\d+)', rb'"\1":_', data)


def served_usage(sim: Simulator) -> tuple[int | None, int | None]:
    return sim.served[-1].input_tokens, sim.served[-1].output_tokens


def post(
    sim: Simulator, read: Callable[[aiohttp.ClientResponse], Awaitable[Any]], body: Any = STREAM, **kwargs: Any
) -> Any:
    async def main() -> Any:
        async with aiohttp.ClientSession() as session, session.post(sim.url + PATH, json=body, **kwargs) as response:
            return await read(response)

    return asyncio.run(main())


# -- records -------------------------------------------------------------------------------------


def test_json_record_matches_what_was_served(hooked: Path, sim: Simulator) -> None:
    async def main() -> Any:
        async with aiohttp.ClientSession() as session, tokentrail.run("aiohttp-run"):
            async with session.post(sim.url + PATH, json=BODY) as response:
                return await response.json()

    reply = asyncio.run(main())
    [call] = recorded(hooked)
    assert (call["input_tokens"], call["output_tokens"]) == served_usage(sim)
    assert (call["input_tokens"], call["output_tokens"]) == (
        reply["usage"]["prompt_tokens"], reply["usage"]["completion_tokens"],
    )  # fmt: skip
    assert (call["api"], call["provider"], call["model"], call["status"], call["http_status"]) == (
        "openai.chat", "local", "gpt-4o-mini", "ok", 200,
    )  # fmt: skip
    assert call["stream"] is False and call["flags"] == [] and call["run"] == "aiohttp-run"
    assert call["call_site"].startswith("tests/capture/test_aiohttp.py:")


async def _collect(iterator: Any) -> bytes:
    return b"".join([item[0] if isinstance(item, tuple) else item async for item in iterator])


async def _loop(read: Callable[[], Awaitable[Any]]) -> bytes:
    out = b""
    while True:
        data = await read()
        chunk = data[0] if isinstance(data, tuple) else data
        if not chunk and (not isinstance(data, tuple) or not data[1]):
            return out
        out += chunk


async def _readexactly(r: aiohttp.ClientResponse) -> bytes:
    out = b""
    while True:
        try:
            out += await r.content.readexactly(100)
        except asyncio.IncompleteReadError as exc:
            return out + exc.partial


async def _read_nowait(r: aiohttp.ClientResponse) -> bytes:
    await r.content.wait_eof()
    return r.content.read_nowait()


READERS: dict[str, Callable[[aiohttp.ClientResponse], Awaitable[bytes]]] = {
    "read": lambda r: r.read(),
    "text": lambda r: _encode(r.text()),
    "content.read()": lambda r: r.content.read(),
    "content.read(n)": lambda r: _loop(lambda: r.content.read(50)),
    "readany": lambda r: _loop(r.content.readany),
    "readline": lambda r: _loop(r.content.readline),
    "readuntil": lambda r: _loop(lambda: r.content.readuntil(b"\n\n")),
    "readchunk": lambda r: _loop(r.content.readchunk),
    "readexactly": _readexactly,
    "read_nowait": _read_nowait,
    "iter_any": lambda r: _collect(r.content.iter_any()),
    "iter_chunked": lambda r: _collect(r.content.iter_chunked(33)),
    "iter_chunks": lambda r: _collect(r.content.iter_chunks()),
    "async for": lambda r: _collect(r.content),
}


async def _encode(text: Awaitable[str]) -> bytes:
    return (await text).encode()


@pytest.mark.parametrize("reader", READERS)
def test_every_way_of_reading_feeds_each_byte_once(
    hooked: Path, sim: Simulator, fed: list[list[bytes]], reader: str
) -> None:
    got = post(sim, READERS[reader])
    assert got == b"".join(fed[-1]) and got.endswith(b"data: [DONE]\n\n")
    [call] = recorded(hooked)
    assert (call["input_tokens"], call["output_tokens"]) == served_usage(sim)
    assert call["status"] == "ok" and call["flags"] == [] and call["stream"] is True
    assert call["first_token_ms"] is not None


def test_content_stays_a_stream_reader(hooked: Path, sim: Simulator) -> None:
    async def check(r: aiohttp.ClientResponse) -> None:
        assert isinstance(r.content, aiohttp.StreamReader) and type(r.content) is capture.ObservedContent
        assert r.content.exception() is None and repr(r.content) == repr(r.content._inner)
        await r.read()
        assert r.content.at_eof() and r.content.total_bytes == len(r._body or b"")

    post(sim, check)
    assert recorded(hooked)[0]["status"] == "ok"


def test_released_early(hooked: Path, sim: Simulator, fed: list[list[bytes]]) -> None:
    first = post(sim, lambda r: r.content.readline())
    assert first.startswith(b"data: ") and b"".join(fed[-1]) == first
    [call] = recorded(hooked)
    assert call["status"] == "cancelled" and "stream_incomplete" in call["flags"]
    # Cut before its usage: the prompt is counted with the model's tokenizer, the text so far is a floor.
    assert call["input_source"] == "counted" and call["input_tokens"] > 0 and "count_floor" in call["flags"]


def test_closed_early(hooked: Path, sim: Simulator) -> None:
    async def close(r: aiohttp.ClientResponse) -> None:
        await r.content.readline()
        r.close()

    post(sim, close)
    [call] = recorded(hooked)
    assert call["status"] == "cancelled" and "stream_incomplete" in call["flags"]


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_abandoned_response_is_recorded_at_garbage_collection(hooked: Path, sim: Simulator) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            response = await session.post(sim.url + PATH, json=STREAM)
            assert response.status == 200
            del response

    asyncio.run(main())
    gc.collect()  # the response lives as long as its connection holds its eof callback
    [call] = recorded(hooked)
    assert call["status"] == "cancelled" and "stream_incomplete" in call["flags"]


def test_cut_stream_raises_the_same_error(hooked: Path, sim: Simulator) -> None:
    def call() -> BaseException:
        with pytest.raises(aiohttp.ClientPayloadError) as caught:
            post(sim, lambda r: _collect(r.content), headers={"X-Sim-Fault": "cut:2"})
        return caught.value

    error = call()
    [record] = recorded(hooked)
    assert record["status"] == "network_error" and "stream_incomplete" in record["flags"]
    capture.uninstall()
    assert repr(call()) == repr(error)


def test_http_error_with_raise_for_status(hooked: Path, sim: Simulator) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession(raise_for_status=True) as session:
            await session.post(sim.url + PATH, json=BODY, headers={"X-Sim-Fault": "429"})

    with pytest.raises(aiohttp.ClientResponseError) as caught:
        asyncio.run(main())
    assert caught.value.status == 429
    [record] = recorded(hooked)
    assert (record["status"], record["http_status"]) == ("http_error", 429)


def test_connection_refused_passes_untouched(hooked: Path) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            await session.post("http://127.0.0.1:9" + PATH, json=BODY)

    with pytest.raises(aiohttp.ClientConnectorError):
        asyncio.run(main())
    [record] = recorded(hooked)
    assert record["status"] == "network_error" and record["http_status"] is None


def test_a_cancelled_read_leaves_the_stream_open(hooked: Path) -> None:
    from aiohttp import web

    pause = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(SSE[0])
        await pause.wait()
        for event in SSE[1:]:
            await response.write(event)
        await response.write_eof()
        return response

    async def main() -> bytes:
        app = web.Application()
        app.router.add_post(PATH, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{port}{PATH}", json=STREAM) as r,
            ):
                first = await r.content.readuntil(b"\n\n")
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(r.content.readany(), 0.05)  # the server is paused
                pause.set()
                return first + await r.content.read()
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == b"".join(SSE)
    [record] = recorded(hooked)
    assert (record["status"], record["input_tokens"], record["output_tokens"]) == ("ok", 9, 2)


def _sse(payload: dict[str, Any]) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini", **payload}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


SSE = [
    _sse({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}),
    _sse({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
    b"data: [DONE]\n\n",
]


def test_other_traffic_leaves_no_record(hooked: Path, sim: Simulator) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(sim.url + "/v1/models") as response:
                assert response.status == 404 and type(response.content) is not capture.ObservedContent
                await response.read()
            async with session.post(sim.url + "/v1/other", data=b"{}") as response:
                await response.read()

    asyncio.run(main())
    assert recorded(hooked) == []


def test_suppressed_traffic_leaves_no_record(hooked: Path, sim: Simulator) -> None:
    with _guard.suppress():
        post(sim, lambda r: r.read(), body=BODY)
    assert recorded(hooked) == []


def test_uninstall_restores_the_originals(hooked: Path, sim: Simulator) -> None:
    capture.uninstall()
    capture.uninstall()
    for cls, name, _ in capture._targets(aiohttp):
        assert not hasattr(getattr(cls, name), capture._SENTINEL)
    post(sim, lambda r: r.read())
    assert recorded(hooked) == []


def test_uninstall_leaves_a_later_wrapper_in_place(hooked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = aiohttp.ClientRequest.send

    async def theirs(self: Any, conn: Any) -> Any:
        return await ours(self, conn)

    monkeypatch.setattr(aiohttp.ClientRequest, "send", theirs)
    capture.uninstall()
    assert aiohttp.ClientRequest.send is theirs
    assert not hasattr(aiohttp.ClientResponse.start, capture._SENTINEL)


def test_httpx_over_aiohttp_is_recorded_once(hooked: Path, sim: Simulator) -> None:
    """openai's DefaultAioHttpClient and litellm send httpx requests through an aiohttp transport."""
    import httpx

    class AiohttpTransport(httpx.AsyncBaseTransport):
        def __init__(self, session: aiohttp.ClientSession) -> None:
            self.session = session

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.session.request(
                request.method, str(request.url), headers=request.headers, data=request.content
            )
            return httpx.Response(response.status, headers=response.headers, content=await response.read())

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            async with httpx.AsyncClient(transport=AiohttpTransport(session)) as client:
                (await client.post(sim.url + PATH, json=BODY)).raise_for_status()

    asyncio.run(main())
    assert len(recorded(hooked)) == 1


# -- instrumentation never breaks the call --------------------------------------------------------


def boom(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("injected tokentrail bug")


def _call(sim: Simulator, body: Any, fault: str | None) -> tuple[int, bytes | str]:
    """One call; the status and the bytes the caller read, or the error it got."""

    async def read(r: aiohttp.ClientResponse) -> tuple[int, bytes]:
        return r.status, normal(await _collect(r.content.iter_any()))

    try:
        return post(sim, read, body=body, headers={"X-Sim-Fault": fault} if fault else {})  # type: ignore[no-any-return]
    except aiohttp.ClientError as exc:
        return -1, repr(exc)


FAILING_PARTS = [
    # (where, request body, fault): every part of tokentrail that a call through aiohttp meets.
    ((_exchange, "start"), BODY, None),
    ((_exchange, "start"), STREAM, "cut:2"),
    ((capture, "_start"), STREAM, None),
    ((_exchange.Exchange, "stream_started"), BODY, None),
    ((_exchange.Exchange, "stream_finished"), STREAM, None),
    ((_exchange.Exchange, "stream_finished"), STREAM, "cut:2"),
    ((openai_chat.ChatCompletions, "parse_stream"), STREAM, None),
    ((openai_chat.ChatCompletions, "parse_stream"), STREAM, "cut:2"),
    ((openai_chat.ChatCompletions, "parse"), BODY, None),
    ((capture.ObservedContent, "_took"), STREAM, None),
    ((capture.ObservedContent, "_read_failed"), STREAM, "cut:2"),
]


@pytest.mark.parametrize(
    "target, body, fault",
    FAILING_PARTS,
    ids=[f"{t[1]}-{'stream' if b is STREAM else 'body'}-{f or 'ok'}" for t, b, f in FAILING_PARTS],
)
def test_a_failing_part_leaves_the_call_identical(
    hooked: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch, target: tuple[Any, str], body: Any, fault: str | None
) -> None:
    capture.uninstall()
    expected = _call(sim, body, fault)
    capture.install()
    monkeypatch.setenv("TOKENTRAIL_STRICT", "0")
    _guard.reset_error_counts()
    monkeypatch.setattr(*target, boom)
    with pytest.warns(tokentrail.errors.InstrumentationWarning):
        got = _call(sim, body, fault)
        tokentrail.flush()
    assert got == expected
    assert sum(_guard.error_counts().values()) >= 1, "the error was not counted"


def test_a_failing_part_leaves_a_refused_connection_identical(hooked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            await session.post("http://127.0.0.1:9" + PATH, json=BODY)

    with pytest.raises(aiohttp.ClientConnectorError) as expected:
        asyncio.run(main())
    monkeypatch.setenv("TOKENTRAIL_STRICT", "0")
    _guard.reset_error_counts()
    monkeypatch.setattr(_exchange.Exchange, "failed", boom)
    with pytest.warns(tokentrail.errors.InstrumentationWarning), pytest.raises(aiohttp.ClientConnectorError) as got:
        asyncio.run(main())
    assert repr(got.value) == repr(expected.value)
